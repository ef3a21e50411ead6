"""The chat app: every model of the lineup in its own pane, every turn sent to all.

The app holds the session and switches to another (a new one, a resumed or a replayed
saved session); its screens get what they need when they are made, and ask for a switch
with a message (`tui.screens.messages`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, SystemCommand
from textual.screen import Screen

from tui.cards import Catalog, ModelCard, card_from_gguf
from tui.engine.base import Backend
from tui.engine.events import SamplingParams
from tui.history import SessionRecord, saved_params
from tui.scenario import Scenario
from tui.screens.chat import ChatScreen, MakeBackend
from tui.screens.messages import ReplayRequested, ResumeRequested
from tui.session import Session, resume
from tui.transcript import TranscriptError, TranscriptWriter


@dataclass
class AppConfig:
    catalog: Catalog
    cards: list[ModelCard]
    make_backend: MakeBackend
    sessions_dir: Path
    lineup: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    model_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    system: str = ""
    engine_info: dict[str, Any] = field(default_factory=dict)
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    scenario: Scenario | None = None  # the one to start in
    problems: list[str] = field(default_factory=list)  # bad card or scenario files, one line each


class LadderApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "Ladder"

    def __init__(self, config: AppConfig) -> None:
        super().__init__()
        self.config = config
        self.session = Session(
            [config.make_backend(card) for card in config.cards],
            sessions_dir=config.sessions_dir,
            params=config.params,
            model_params=config.model_params,
            system=config.system,
            lineup=config.lineup,
            engine_info=config.engine_info,
            scenario=config.scenario,
        )
        self.unsaved_on_exit: str | None = None  # what could not be saved, said after the app has closed
        self._warned_unsaved: tuple[TranscriptWriter, int, str] | None = None  # what `may_leave` said last

    def on_mount(self) -> None:
        for problem in self.config.problems:
            self.notify(problem, title="Could not read a file", severity="warning", timeout=10, markup=False)
        self.push_screen(self.chat_screen())

    def chat_screen(self, resumed: SessionRecord | None = None, replay_of: SessionRecord | None = None) -> ChatScreen:
        """The chat screen of the current session."""
        config = self.config
        return ChatScreen(
            self.session,
            catalog=config.catalog,
            scenarios=config.scenarios,
            sessions_dir=config.sessions_dir,
            make_backend=config.make_backend,
            may_leave=self.may_leave,
            resumed=resumed,
            replay_of=replay_of,
        )

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if commands := getattr(screen, "palette_commands", None):  # a screen's own keys: the chat's, the Lab's
            yield from commands()

    def may_leave(self, again: str) -> bool:
        """Whether the current session may be left (a new one, another one, quitting): yes
        when all of it is saved, or when asked `again` after being told what is not."""
        writer = self.session.transcript
        unsaved = len(writer.pending)
        if not unsaved or self._warned_unsaved == (writer, unsaved, again):
            return True
        self._warned_unsaved = (writer, unsaved, again)
        self.notify(
            f"{unsaved} event(s) of this session are not saved ({writer.failure}). Ctrl+S saves them in "
            f"another folder; {again} without them.",
            title="Not saved",
            severity="error",
            timeout=15,
            markup=False,
        )
        return False

    async def action_quit(self) -> None:
        if self.may_leave("Ctrl+Q again quits"):
            self.exit()

    async def on_unmount(self) -> None:
        try:
            await self.session.close()
        except TranscriptError as error:
            count = len(self.session.transcript.pending)
            self.unsaved_on_exit = f"{count} event(s) of this session were not saved: {error}" if count else str(error)

    def cards_for(self, record: SessionRecord) -> tuple[list[ModelCard], list[str]]:
        """The cards of a saved session's models that are still known, and the ids that are not."""
        found, missing = [], []
        for saved in record.models:
            model_id = str(saved.get("id"))
            origin = Path(str(saved.get("origin", "")))
            if model_id in self.config.catalog.cards:
                found.append(self.config.catalog.cards[model_id])
            elif origin.suffix == ".gguf" and origin.is_file():
                found.append(replace(card_from_gguf(origin), id=model_id))
            else:
                missing.append(model_id)
        return found, missing

    async def switch_session(
        self,
        cards: list[ModelCard],
        make: Callable[[list[Backend]], Session],
        resumed: SessionRecord | None = None,
        replay_of: SessionRecord | None = None,
    ) -> None:
        """Leave the current session for another: loaded models that stay are kept (their
        cache cleared), the others are closed; then a new chat screen shows the new session."""
        old = self.session
        for model in old.models:
            await model.cancel()
        kept = {model.card.id: model for model in old.models if model.card.id in {card.id for card in cards}}
        for model in old.models:
            if model.card.id not in kept:
                await model.close()
            else:
                await model.reset()
        with contextlib.suppress(TranscriptError):  # the caller asked `may_leave` first
            old.end_transcript()
        self.session = make([kept.get(card.id) or self.config.make_backend(card) for card in cards])
        while len(self.screen_stack) > 2:  # Textual's default screen, then the chat screen
            await self.pop_screen()
        await self.switch_screen(self.chat_screen(resumed=resumed, replay_of=replay_of))

    @on(ResumeRequested)
    async def resume_requested(self, message: ResumeRequested) -> None:
        await self.resume(message.record)

    @on(ReplayRequested)
    async def replay_requested(self, message: ReplayRequested) -> None:
        await self.replay(message.record, message.cards)

    async def resume(self, record: SessionRecord) -> None:
        cards, missing = self.cards_for(record)
        if not cards:
            self.notify(
                f"None of this session's models is available ({', '.join(missing)})", severity="error", markup=False
            )
            return
        if not self.may_leave("resume again to leave it"):
            return
        scenario = self.config.scenarios.get(record.scenario_id or "")
        await self.switch_session(
            cards, lambda models: resume(record, models, scenario, self.config.engine_info), resumed=record
        )
        for model_id in missing:
            self.notify(f"{model_id} is no longer available; resuming without it", severity="warning", markup=False)
            self.session.save({"type": "models", "added": [], "removed": [model_id]})

    async def replay(self, record: SessionRecord, cards: list[ModelCard]) -> None:
        if not self.may_leave("replay again to leave it"):
            return
        scenario = self.config.scenarios.get(record.scenario_id or "")
        header = record.header

        def make(models: list[Backend]) -> Session:
            session = Session(
                models,
                sessions_dir=self.config.sessions_dir,
                params=saved_params(header.get("params"), self.config.params),
                system=str(header.get("system") or ""),
                lineup=None,
                scenario=scenario,
                engine_info=self.config.engine_info,
                # The settings of this app's session, not the saved one's: they say how to ask, not what.
                few_shot=self.session.few_shot,
                logprobs=self.session.logprobs,
            )
            session.replay_of = record.id
            return session

        await self.switch_session(cards, make, replay_of=record)
