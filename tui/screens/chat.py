"""The main screen: one pane per model, a composer, and the keys that drive them.

Each model has a turn queue and one task that loads the model, then answers the queued
turns in order, so the composer is usable at once: a turn sent while a model is still
loading is answered when it is ready. Streamed text is buffered per reply and shown in
all panes at once on a timer (see `tick`), so typing stays responsive while every pane
streams.

The same screen shows a resumed session (its saved turns first) and a replay (a saved
session's user turns sent again, in order, beside the original replies).

The screen gets what it needs from the app in its constructor and never reaches up into
the app; the app makes a new chat screen for each session it switches to.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from textual import events, on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer

from tui.cards import Catalog, ModelCard, card_from_record
from tui.checks import Item
from tui.engine.base import Backend, ModelLoadError
from tui.engine.events import Finished, Notice
from tui.history import SessionRecord
from tui.scenario import Scenario
from tui.screens.diff import diff_in_chat
from tui.screens.help import HelpScreen
from tui.screens.lab import LabScreen
from tui.screens.leaderboard import LeaderboardScreen
from tui.screens.models import ModelsScreen
from tui.screens.probs import probs_in_chat
from tui.screens.save_elsewhere import SaveElsewhereScreen
from tui.screens.scenarios import ScenarioScreen
from tui.screens.sessions import SessionsScreen
from tui.screens.settings import Settings, SettingsScreen
from tui.screens.vote import guess, hidden_refuses, reveal, show_blind, show_blind_panes, start_blind_session, vote
from tui.session import Session
from tui.textsafe import safe_text
from tui.transcript import TranscriptError
from tui.widgets.composer import Composer
from tui.widgets.compositor import CroppedCompositor
from tui.widgets.grid import PaneGrid, PaneKeys
from tui.widgets.pane import ANSWERING, ModelPane
from tui.widgets.session_lines import SessionLines

MakeBackend = Callable[[ModelCard], Backend]
MayLeave = Callable[[str], bool]  # whether the session may be left; else says why, and that `again` (str) will

# Streaming text reaches the screen every `interval` seconds, all panes in one frame, each a
# little more of its text (tui/pacing.py). A frame costs a few milliseconds of CPU taken from
# the models, so the interval adapts: the shortest that keeps the app within its budget of
# one core (README, Performance, figure 4).
UI_CPU_BUDGET = 0.10
FASTEST, SLOWEST = 0.1, 0.5
CPU_WINDOW_S = 2.0  # the app's CPU share is averaged over about this long
LIVE_NUMBERS_S = 0.5  # how often the footers' token count and speed change while replies stream


class ChatScreen(PaneKeys, Screen[None]):
    BINDINGS = [
        Binding("escape", "cancel_all", "Cancel all", priority=True),
        Binding("f8", "cancel_pane", "Cancel pane"),
        Binding("f6", "scenario", "Scenario", priority=True),
        Binding("f7", "next_item", "Next item", priority=True),
        *PaneKeys.PANE_BINDINGS,
        Binding("f2", "settings", "Settings"),
        Binding("f3", "models", "Models"),
        Binding("f4", "new_session", "New session"),
        Binding("ctrl+o", "sessions", "Sessions"),
        Binding("ctrl+l", "lab", "Lab"),
        Binding("ctrl+k", "leaderboard", "Leaderboard", show=False, priority=True),  # else the composer cuts the line
        Binding("ctrl+d", "diff", "Diff two panes' replies", show=False, priority=True),  # else the composer deletes
        Binding("ctrl+t", "token_probs", "Token probabilities", show=False),
        Binding("ctrl+b", "blind", "Blind session", show=False),
        Binding("ctrl+v", "vote", "Vote (blind)", show=False, priority=True),  # else the composer pastes
        Binding("ctrl+g", "guess", "Guess the largest (blind)", show=False),
        Binding("ctrl+n", "reveal", "Reveal the names (blind)", show=False),
        Binding("ctrl+s", "save_elsewhere", "Save elsewhere", show=False),
        Binding("ctrl+r", "retry_saving", "Retry saving", show=False),
        Binding("f12", "fold_lines", "Fold or unfold the header lines", show=False),
        Binding("f1", "help", "Help"),
    ]

    def __init__(
        self,
        session: Session,
        *,
        catalog: Catalog,
        scenarios: dict[str, Scenario],
        sessions_dir: Path,
        make_backend: MakeBackend,
        may_leave: MayLeave,
        resumed: SessionRecord | None = None,
        replay_of: SessionRecord | None = None,
    ) -> None:
        super().__init__()
        self._compositor = CroppedCompositor()  # a frame draws only what changed (tui/widgets/compositor.py)
        self.session = session
        self.catalog = catalog  # the cards the models dialog offers
        self.scenarios = scenarios
        self.sessions_dir = sessions_dir  # where the sessions screen looks
        self.make_backend = make_backend
        self.may_leave = may_leave
        self.grid = PaneGrid()
        self.queues: dict[str, asyncio.Queue[int]] = {}
        self.resumed = resumed  # a saved session continued here: its turns are shown first
        self.replay_of = replay_of  # a saved session whose user turns are sent again, in order

    @property
    def panes(self) -> dict[str, ModelPane]:
        return self.grid.panes

    def compose(self) -> ComposeResult:
        yield SessionLines()
        yield self.grid
        yield Composer(
            id="composer", soft_wrap=True, placeholder="Type a turn for every model · Enter sends · Ctrl+J new line"
        )
        yield Footer()

    async def on_mount(self) -> None:
        for model in self.session.models:
            await self.add_pane(model)
        if self.replay_of is not None:
            await self.show_originals(self.replay_of)
        self.refresh_title()
        self.query_one(Composer).focus()
        scenario = self.session.scenario
        if self.replay_of is not None:
            self.run_worker(self.replay(self.replay_of), group="replay", exit_on_error=False)
        elif self.resumed is None and scenario and scenario.first_turn:
            self.send_turn(scenario.first_turn)
        self.stream_interval = FASTEST
        self._last_tick = (time.perf_counter(), time.process_time())
        self.cpu_share = 0.0  # of one core, over the last few ticks
        self.next_tick = time.perf_counter() + self.stream_interval
        self.numbers_shown = 0.0  # when the footers last showed the live numbers
        self.set_timer(self.stream_interval, self.tick)

    # --- panes and their models -----------------------------------------------------------

    async def add_pane(self, model: Backend) -> None:
        pane = ModelPane(model.card)
        pane.overrides = self.override_text(model.card.id)
        show_blind(self.session, pane)  # before it is shown: a blind session's names are never on screen
        self.queues[model.card.id] = asyncio.Queue()
        await self.grid.add(model.card.id, pane)
        if self.resumed is not None:
            for turn in self.resumed.turns:
                await pane.show_saved(turn.number, turn.text, turn.replies.get(model.card.id))
            pane.score = self.session.scores.get(model.card.id)
        self.run_worker(self.model_loop(model, pane), group=f"model-{model.card.id}", exit_on_error=False)

    async def show_originals(self, record: SessionRecord) -> None:
        """A replay shows the saved replies beside the new ones, in read-only panes."""
        for card in record.models:
            pane = ModelPane(card_from_record(card), original=True)
            await self.grid.add(f"original:{card.get('id')}", pane)
            for turn in record.turns:
                await pane.show_saved(turn.number, turn.text, turn.replies.get(str(card.get("id"))))
            pane.state = "done"

    async def remove_pane(self, model_id: str) -> None:
        self.workers.cancel_group(self, f"model-{model_id}")
        self.queues.pop(model_id)
        await self.grid.remove_pane(model_id)
        await self.session.remove_model(model_id)

    async def model_loop(self, model: Backend, pane: ModelPane) -> None:
        """Load the model, then answer its queued turns one after another."""

        def progress(what: str, done: int, total: int) -> None:  # called from the loading thread
            percent = f"{100 * done // total}%" if total else ""
            if percent != pane.progress:
                self.app.call_from_thread(setattr, pane, "progress", percent)

        if model.state not in ("ready", "busy"):  # a model kept from the previous session is loaded
            try:
                pane.state = "fetching"
                await model.load(progress)
            except Exception as error:  # whatever it is, it fails this pane only
                pane.show_error(str(error) if isinstance(error, ModelLoadError) else f"could not start: {error!r}")
                return
        pane.show_ready((model.n_past, model.n_ctx))
        queue = self.queues[model.card.id]
        while True:
            turn = await queue.get()
            await self.stream_reply(model, pane, turn)

    async def stream_reply(self, model: Backend, pane: ModelPane, turn: int) -> None:
        session, epoch = self.session, self.session.epoch
        await pane.begin(turn, session.conversation.user_turns[turn - 1])
        async for event in session.answer(model, turn, epoch):
            if session.epoch != epoch:  # a new session (F4, F6) began while this streamed: not its reply
                continue
            await pane.apply(event)
            if isinstance(event, Notice) and not pane.hidden:  # a blind pane's notices wait for the reveal
                self.notify(safe_text(event.message), title=safe_text(model.card.name), timeout=6, markup=False)
            elif isinstance(event, Finished):
                pane.context = (model.n_past, model.n_ctx)  # what the model holds now, whatever the reply did
                self.refresh_saving()
        if session.epoch != epoch:
            await pane.drop_reply()

    def tick(self) -> None:
        """Show what streamed since the last tick, in every pane at once: one frame for
        all of them, not one per token."""
        wall, cpu = time.perf_counter(), time.process_time()
        elapsed = max(wall - self._last_tick[0], 1e-3)
        share = (cpu - self._last_tick[1]) / elapsed
        self._last_tick = (wall, cpu)
        # Kept between 85% and 95% of the budget, averaged over a couple of seconds (a tick that lays the
        # screen out costs several others): as fast as the budget allows, with some left for typing.
        self.cpu_share += (share - self.cpu_share) * min(1.0, elapsed / CPU_WINDOW_S)
        if self.cpu_share > 0.95 * UI_CPU_BUDGET:
            self.stream_interval = min(SLOWEST, self.stream_interval * 1.1)
        elif self.cpu_share < 0.85 * UI_CPU_BUDGET:
            self.stream_interval = max(FASTEST, self.stream_interval / 1.1)
        with self.app.batch_update():
            panes = list(self.panes.values())
            if any([pane.flush() for pane in panes]):  # one layout gives every reply new room, not one each
                for pane in panes:
                    pane.make_room()
        if wall - self.numbers_shown >= LIVE_NUMBERS_S:
            self.numbers_shown = wall
            # In a frame of their own: drawn with the text, every row between the footers and the text would be.
            self.call_after_refresh(self.show_live_numbers)
        # At a steady rate: a tick that runs late (the models busy on every core) does not delay the next.
        self.next_tick = max(self.next_tick + self.stream_interval, time.perf_counter())
        self.set_timer(max(0.001, self.next_tick - time.perf_counter()), self.tick)  # Textual's timers need > 0

    def show_live_numbers(self) -> None:
        for pane in self.panes.values():
            if pane.state in ANSWERING:
                pane.refresh_footer()

    def on_resize(self, event: events.Resize) -> None:
        self.query_one(SessionLines).fit(event.size.height)  # a short screen folds the lines above the panes

    def on_screen_resume(self) -> None:
        self.refresh_title()

    # --- sending and cancelling ------------------------------------------------------------

    @on(Composer.Submitted)
    def send(self, message: Composer.Submitted) -> None:
        self.send_turn(message.text)

    def send_turn(self, text: str, item: Item | None = None) -> int:
        turn = self.session.start_turn(text, item)
        for model in self.session.models:
            if model.state != "error":
                self.queues[model.card.id].put_nowait(turn)
        self.refresh_title()
        return turn

    def action_next_item(self) -> None:
        scenario = self.session.scenario
        if scenario is None or not scenario.has_items:
            self.notify("This session has no scenario with items; F6 picks a scenario", severity="warning")
            return
        item = self.session.next_item()
        self.send_turn(item.prompt, item)

    async def replay(self, record: SessionRecord) -> None:
        """Send the saved user turns in order, each once every model has answered the last,
        so that each model's history holds its own replies."""
        for saved in record.turns:
            item = Item.from_record(saved.item) if saved.item else None
            turn = self.send_turn(saved.text, item)
            while any(
                turn not in self.session.conversation.replies.get(m.card.id, {})
                for m in self.session.models
                if m.state not in ("error", "closed")
            ):
                await asyncio.sleep(0.1)
        self.notify(f"Replay of {record.id} done: {len(record.turns)} turns", timeout=6, markup=False)

    async def cancel(self, model_id: str) -> None:
        queue = self.queues[model_id]
        while not queue.empty():  # turns not started yet are dropped too
            queue.get_nowait()
        await self.session.cancel(model_id)

    async def action_cancel_all(self) -> None:
        self.workers.cancel_group(self, "replay")
        for model_id in list(self.queues):
            await self.cancel(model_id)

    async def action_cancel_pane(self) -> None:
        pane = self.grid.current_pane()
        if pane and pane.card.id in self.queues and not pane.original:
            await self.cancel(pane.card.id)

    # --- titles ------------------------------------------------------------------------------

    def override_text(self, model_id: str) -> str:
        changes = self.session.model_params.get(model_id, {})
        return " ".join(f"{name}={value}" for name, value in changes.items())

    def refresh_title(self) -> None:
        self.query_one(SessionLines).show(self.session)
        for model_id, pane in self.panes.items():
            pane.overrides = self.override_text(model_id)
        show_blind_panes(self.session, self.grid)

    # --- saving when the sessions folder fails ---------------------------------------------

    def refresh_saving(self) -> None:
        self.query_one(SessionLines).show_saving(self.session.transcript)

    def action_save_elsewhere(self) -> None:
        writer = self.session.transcript
        if writer.failure is None:
            self.notify("Nothing to save: every turn so far is saved")
            return
        self.app.push_screen(SaveElsewhereScreen(str(writer.failure)), self.save_elsewhere)

    def save_elsewhere(self, folder: Path | None) -> None:
        if folder is None:
            return
        try:
            self.session.transcript.save_elsewhere(folder)  # the saving line says where, once it worked
        except TranscriptError as error:
            self.notify(str(error), title="Not saved", severity="error", timeout=10, markup=False)
        self.refresh_title()

    def action_retry_saving(self) -> None:
        writer = self.session.transcript
        if writer.failure is None:
            self.notify("Nothing to retry: every turn so far is saved")
            return
        with contextlib.suppress(TranscriptError):
            writer.save_pending()
        if writer.failure is not None:
            self.notify(str(writer.failure), title="Still not saved", severity="error", timeout=8, markup=False)
        self.refresh_title()

    # --- other screens -------------------------------------------------------------------------

    def action_settings(self) -> None:
        session = self.session
        system = session.conversation.system
        current = Settings(session.params, session.model_params, system, session.few_shot, session.logprobs)
        self.app.push_screen(SettingsScreen(current, [model.card for model in session.models]), self.apply_settings)

    def apply_settings(self, changed: Settings | None) -> None:
        if changed is not None:
            self.session.change_settings(
                params=changed.params,
                model_params=changed.model_params,
                system=changed.system,
                few_shot=changed.few_shot,
                logprobs=changed.logprobs,
            )
        self.refresh_title()

    def action_models(self) -> None:
        if hidden_refuses(self, self.session, "Changing the models"):
            return
        current = [model.card for model in self.session.models]
        self.app.push_screen(ModelsScreen(self.catalog, current), self.apply_models)

    async def apply_models(self, wanted: list[ModelCard] | None) -> None:
        if wanted is None:
            return
        wanted_ids = {card.id for card in wanted}
        for model_id in [m for m in self.queues if m not in wanted_ids]:
            await self.remove_pane(model_id)
        for card in wanted:
            if card.id not in self.queues:
                model = self.make_backend(card)
                self.session.add_model(model)
                await self.add_pane(model)
        self.refresh_title()

    async def start_over(self, scenario: Scenario | None = None, blind: bool = False) -> None:
        """A new session (in `scenario`, if given; `blind`: a blind one): replies stop, panes
        empty, a replay's original panes go."""
        await self.action_cancel_all()
        await self.session.start_over(scenario, blind)
        for key in [key for key, pane in self.panes.items() if pane.original]:
            await self.grid.remove_pane(key)
        for pane in self.panes.values():
            await pane.clear()
        self.refresh_title()

    async def action_new_session(self) -> None:
        if not self.may_leave("F4 again starts a new session"):
            return
        await self.start_over()
        self.notify("New session: history cleared; the transcript starts with the next turn")

    def action_scenario(self) -> None:
        if not self.may_leave("F6 again picks a scenario"):
            return
        current = self.session.scenario.id if self.session.scenario else None
        self.app.push_screen(ScenarioScreen(self.scenarios, current), self.start_scenario)

    async def start_scenario(self, scenario: Scenario | None) -> None:
        if scenario is None:
            return
        await self.start_over(scenario)
        self.notify(safe_text(scenario.description), title=safe_text(scenario.title), timeout=8, markup=False)
        if scenario.first_turn:
            self.send_turn(scenario.first_turn)

    def action_sessions(self) -> None:
        current = [model.card for model in self.session.models]
        self.app.push_screen(SessionsScreen(self.sessions_dir, self.catalog, current))

    def action_lab(self) -> None:
        self.app.push_screen(LabScreen(self.session, self.scenarios, self.sessions_dir))

    def action_fold_lines(self) -> None:
        self.query_one(SessionLines).toggle()

    def action_diff(self) -> None:
        diff_in_chat(self, self.grid, self.session, self.replay_of)

    def action_token_probs(self) -> None:
        probs_in_chat(self, self.grid, self.session, self.replay_of)

    def action_leaderboard(self) -> None:
        self.app.push_screen(LeaderboardScreen(self.sessions_dir))

    async def action_blind(self) -> None:
        await start_blind_session(self, self.session, lambda: self.start_over(blind=True), self.may_leave)

    def action_vote(self) -> None:
        vote(self, self.session, self.grid)

    def action_guess(self) -> None:
        guess(self, self.session, self.grid)

    def action_reveal(self) -> None:
        reveal(self, self.session, self.grid)

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.BINDINGS))

    def palette_commands(self) -> Iterator[SystemCommand]:
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.description and not binding.action.startswith(("scroll", "step")):
                yield SystemCommand(
                    binding.description,
                    f"{binding.description} ({binding.key})",
                    lambda action=binding.action: self.run_action(action),
                )
        yield SystemCommand("Previous pane", "Show the previous model's pane (alt+left)", lambda: self.grid.step(-1))
        yield SystemCommand("Next pane", "Show the next model's pane (alt+right)", lambda: self.grid.step(1))
