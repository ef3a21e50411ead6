"""The chat app on four scripted models that stream a long story, in a terminal of its own:
`python tests/scripted_chat.py SESSIONS_DIR`. tests/test_bench_app.py reads its screen through
tmux as `ladder bench` reads the real app's (figure 4), without loading a model."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: scripted.py is beside it

from scripted import ScriptedModel, card

from tui.app import AppConfig, LadderApp
from tui.cards import Catalog
from tui.engine.events import SamplingParams

CARDS = [
    card(f"m{n}", size, f"M{n}") for n, size in enumerate([100_000_000, 200_000_000, 500_000_000, 1_500_000_000], 1)
]
STORY = "\n\n".join(" ".join(["The keeper climbed the stairs as the storm came in."] * 6) for _ in range(40))


def main() -> None:
    config = AppConfig(
        catalog=Catalog(cards={c.id: c for c in CARDS}),
        cards=CARDS,
        make_backend=lambda c: ScriptedModel(c, script=lambda request: STORY, delay=0.05),
        sessions_dir=Path(sys.argv[1]),
        params=SamplingParams(max_tokens=5000),
    )
    LadderApp(config).run()


if __name__ == "__main__":
    main()
