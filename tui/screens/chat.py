"""The main screen: one pane per model, a composer, and the keys that drive them.

Each model has a turn queue and one task that loads the model, then answers the queued
turns in order, so the composer is usable at once: a turn sent while a model is still
loading is answered when it is ready. Each reply streams into its pane through a
batching Markdown stream, so typing stays responsive while every pane streams.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from collections.abc import Iterator

from rich.text import Text
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Container
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from tui.engine.base import Backend, ModelLoadError
from tui.checks import Item
from tui.scenario import Scenario
from tui.session import Checked, Session
from tui.engine.events import Finished, FirstToken, Notice, PromptReady, TextPiece
from tui.textsafe import safe_text
from tui.widgets.composer import Composer
from tui.widgets.pane import STATES, ModelPane

# Streaming text reaches the screen in batches, every `interval` seconds. On a slow
# machine one screen update of four panes costs tens of milliseconds of CPU, taken from
# the models, so the interval adapts: it grows while the app uses more than its budget
# of one core and shrinks back when it uses much less.
UI_CPU_BUDGET = 0.10
FASTEST, SLOWEST = 0.1, 0.5
MIN_PANE_WIDTH = 38  # narrower than this, panes are shown one at a time with a switcher


class ChatScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "cancel_all", "Cancel all", priority=True),
        Binding("f8", "cancel_pane", "Cancel pane"),
        Binding("f5", "zoom", "Zoom"),
        Binding("f9", "toggle_sync", "Sync scroll"),
        Binding("alt+left", "previous_pane", "◀ Pane"),
        Binding("alt+right", "next_pane", "Pane ▶"),
        Binding("alt+up", "scroll(-3)", "Scroll up", show=False),
        Binding("alt+down", "scroll(3)", "Scroll down", show=False),
        Binding("shift+pageup", "scroll(-0.8)", "Page up", show=False),
        Binding("shift+pagedown", "scroll(0.8)", "Page down", show=False),
        Binding("f6", "scenario", "Scenario", priority=True),
        Binding("f7", "next_item", "Next item", priority=True),
        Binding("f2", "settings", "Settings"),
        Binding("f3", "models", "Models"),
        Binding("f4", "new_session", "New session"),
        Binding("f1", "help", "Help"),
    ]

    zoomed: reactive[bool] = reactive(False)
    sync_scroll: reactive[bool] = reactive(True)
    current: reactive[int] = reactive(0)

    def __init__(self) -> None:
        super().__init__()
        self.panes: dict[str, ModelPane] = {}
        self.queues: dict[str, asyncio.Queue[int]] = {}
        self._syncing = False

    @property
    def session(self) -> Session:
        return self.app.session  # type: ignore[attr-defined, no-any-return]

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        yield Static(id="settings-line")
        yield Static(id="scenario-line")
        yield Static(id="switcher")
        yield Container(id="panes")
        yield Composer(id="composer", soft_wrap=True, placeholder="Type a turn for every model · Enter sends · Ctrl+J new line")
        yield Footer()

    async def on_mount(self) -> None:
        for model in self.session.models:
            await self.add_pane(model)
        self.refresh_title()
        self.query_one(Composer).focus()
        scenario = self.session.scenario
        if scenario and scenario.first_turn:
            self.send_turn(scenario.first_turn)
        self.stream_interval = FASTEST
        self._last_tick = (time.perf_counter(), time.process_time())
        self.set_timer(self.stream_interval, self.tick)

    # --- panes and their models -----------------------------------------------------------

    def ordered_panes(self) -> list[ModelPane]:
        return sorted(self.panes.values(), key=lambda pane: pane.card.params)

    async def add_pane(self, model: Backend) -> None:
        pane = ModelPane(model.card)
        pane.overrides = self.override_text(model.card.id)
        self.panes[model.card.id] = pane
        self.queues[model.card.id] = asyncio.Queue()
        ordered = self.ordered_panes()
        index = ordered.index(pane)
        container = self.query_one("#panes", Container)
        if index + 1 < len(ordered):
            await container.mount(pane, before=ordered[index + 1])
        else:
            await container.mount(pane)
        self.watch(pane.turns, "scroll_y", lambda _: self.on_pane_scrolled(pane), init=False)
        self.run_worker(self.model_loop(model, pane), group=f"model-{model.card.id}", exit_on_error=False)
        self.update_layout()

    async def remove_pane(self, model_id: str) -> None:
        self.workers.cancel_group(self, f"model-{model_id}")
        pane = self.panes.pop(model_id)
        self.queues.pop(model_id)
        await pane.remove()
        await self.session.remove_model(model_id)
        self.current = min(self.current, max(len(self.panes) - 1, 0))
        self.update_layout()

    async def model_loop(self, model: Backend, pane: ModelPane) -> None:
        """Load the model, then answer its queued turns one after another."""
        pane.state = "loading"

        def progress(what: str, done: int, total: int) -> None:
            percent = f"{100 * done // total}%" if total else ""
            if percent != pane.progress:
                self.app.call_from_thread(setattr, pane, "progress", percent)

        try:
            pane.state = "fetching"
            await model.load(progress)
        except ModelLoadError as error:
            pane.progress = ""
            pane.show_error(str(error))
            self.update_switcher()
            return
        pane.progress = ""
        pane.state = "ready"
        pane.context = (0, model.n_ctx)
        pane.refresh_footer()
        self.update_switcher()
        queue = self.queues[model.card.id]
        while True:
            turn = await queue.get()
            await self.stream_reply(model, pane, turn)

    async def stream_reply(self, model: Backend, pane: ModelPane, turn: int) -> None:
        view = await pane.begin(turn, self.session.conversation.user_turns[turn - 1])
        self.update_switcher()
        async for event in self.session.answer(model, turn):
            if isinstance(event, TextPiece):
                pane.live_tokens += 1
                view.write(event.text)
            elif isinstance(event, FirstToken):
                pane.state = "streaming"
                pane.live_started = time.perf_counter()
                self.update_switcher()
            elif isinstance(event, PromptReady):
                pane.context = (event.prompt_tokens, model.n_ctx)
            elif isinstance(event, Notice):
                self.notify(safe_text(event.message), title=model.card.name, timeout=6)
            elif isinstance(event, Checked):
                view.show_check(event.result)
                pane.score = event.score
                pane.refresh_header()
                pane.follow()
            elif isinstance(event, Finished):
                pane.streaming = None
                await view.finish(event)
                pane.follow()
                pane.last = event
                pane.state = event.status
                pane.context = (model.n_past, model.n_ctx)
                pane.refresh_footer()
                self.update_switcher()

    async def tick(self) -> None:
        """Show what streamed since the last tick, in every pane at once: one layout
        pass for all of them, not one per token."""
        wall, cpu = time.perf_counter(), time.process_time()
        share = (cpu - self._last_tick[1]) / max(wall - self._last_tick[0], 1e-3)
        self._last_tick = (wall, cpu)
        if share > UI_CPU_BUDGET:
            self.stream_interval = min(SLOWEST, self.stream_interval * 1.25)
        elif share < UI_CPU_BUDGET / 2:
            self.stream_interval = max(FASTEST, self.stream_interval / 1.25)
        with self.app.batch_update():
            for pane in list(self.panes.values()):
                await pane.flush()
        self.set_timer(self.stream_interval, self.tick)

    def on_screen_resume(self) -> None:
        self.refresh_title()

    # --- sending and cancelling ------------------------------------------------------------

    @on(Composer.Submitted)
    def send(self, message: Composer.Submitted) -> None:
        self.send_turn(message.text)

    def send_turn(self, text: str, item: Item | None = None) -> None:
        turn = self.session.start_turn(text, item)
        for model in self.session.models:
            if model.state != "error":
                self.queues[model.card.id].put_nowait(turn)
        self.refresh_title()

    def action_next_item(self) -> None:
        scenario = self.session.scenario
        if scenario is None or not scenario.has_items:
            self.notify("This session has no scenario with items; F6 picks a scenario", severity="warning")
            return
        item = self.session.next_item()
        self.send_turn(item.prompt, item)

    async def cancel(self, model_id: str) -> None:
        queue = self.queues[model_id]
        while not queue.empty():  # turns not started yet are dropped too
            queue.get_nowait()
        await self.session.cancel(model_id)

    async def action_cancel_all(self) -> None:
        for model_id in list(self.queues):
            await self.cancel(model_id)

    async def action_cancel_pane(self) -> None:
        pane = self.current_pane()
        if pane:
            await self.cancel(pane.card.id)

    # --- layout: side by side, or one at a time ---------------------------------------------

    def current_pane(self) -> ModelPane | None:
        panes = self.ordered_panes()
        return panes[self.current] if panes else None

    def single_pane(self) -> bool:
        return self.zoomed or self.size.width < MIN_PANE_WIDTH * min(len(self.panes), 4)

    def update_layout(self) -> None:
        panes = self.ordered_panes()
        if not panes:
            return
        self.current = min(self.current, len(panes) - 1)
        single = self.single_pane()
        columns = 1 if single else min(len(panes), 4)
        grid = self.query_one("#panes", Container)
        grid.styles.grid_size_columns = columns
        grid.styles.grid_size_rows = 1 if single else math.ceil(len(panes) / columns)
        for index, pane in enumerate(panes):
            pane.display = not single or index == self.current
            pane.set_class(index == self.current, "-current")
        self.query_one("#switcher").display = single
        self.update_switcher()

    def update_switcher(self) -> None:
        line = Text()
        for index, pane in enumerate(self.ordered_panes()):
            label = f" {pane.card.params_label} {pane.card.name.split(' ')[0]} {STATES[pane.state][0]} "
            line.append(label, style="reverse bold" if index == self.current else "")
            line.append(" ")
        line.append(" Alt+←/→ switch · F5 zoom", style="dim")
        self.query_one("#switcher", Static).update(line)

    def on_resize(self) -> None:
        self.update_layout()

    def watch_zoomed(self) -> None:
        self.update_layout()

    def watch_current(self) -> None:
        self.update_layout()

    def action_zoom(self) -> None:
        self.zoomed = not self.zoomed

    def action_previous_pane(self) -> None:
        self.current = (self.current - 1) % max(len(self.panes), 1)

    def action_next_pane(self) -> None:
        self.current = (self.current + 1) % max(len(self.panes), 1)

    # --- scrolling, together by turn or one pane at a time ---------------------------------

    def action_toggle_sync(self) -> None:
        self.sync_scroll = not self.sync_scroll
        self.notify("Panes scroll together, aligned by turn" if self.sync_scroll else "Panes scroll one at a time")

    def action_scroll(self, amount: float) -> None:
        pane = self.current_pane()
        if pane:
            lines = amount * pane.turns.size.height if abs(amount) < 1 else amount
            pane.turns.scroll_relative(y=lines, animate=False)

    def on_pane_scrolled(self, pane: ModelPane) -> None:
        pane.scrolled()
        if not pane.following:  # following new text is not a scroll the others should copy
            self.follow_scroll(pane)

    def follow_scroll(self, leader: ModelPane) -> None:
        """Scroll the other panes so that the turn at the top of `leader` is at their top."""
        if self._syncing or not self.sync_scroll:
            return
        top = leader.turns.scroll_y
        views = [view for view in leader.turns.children if view.has_class("turn")]
        anchor = next((v for v in reversed(views) if v.virtual_region.y <= top), None)
        if anchor is None:
            return
        fraction = (top - anchor.virtual_region.y) / max(anchor.virtual_region.height, 1)
        self._syncing = True
        try:
            for pane in self.panes.values():
                view = pane.turn_view(anchor.turn) if pane is not leader else None
                if view is not None:
                    target = view.virtual_region.y + fraction * view.virtual_region.height
                    pane.turns.scroll_to(y=target, animate=False, immediate=True)
        finally:
            self._syncing = False

    # --- titles ------------------------------------------------------------------------------

    def override_text(self, model_id: str) -> str:
        changes = self.session.model_params.get(model_id, {})
        return " ".join(f"{name}={value}" for name, value in changes.items())

    def refresh_title(self) -> None:
        session = self.session
        info = session.engine_info
        path = session.transcript.path
        if path is None:
            where = "saved from the first turn"
        elif path.is_relative_to(Path.cwd()):
            where = str(path.relative_to(Path.cwd()))
        else:
            where = str(path).replace(str(Path.home()), "~", 1)
        title = Text.assemble(("Ladder", "bold"), f" · {session.lineup or 'custom lineup'}")
        if info:
            title.append(f" · {info.get('schedule')}, {info.get('cores')} cores", style="dim")
        title.append(f" · {where}", style="dim")
        self.query_one("#title", Static).update(title)
        params = session.params
        system = session.conversation.system.replace("\n", " ") or "(none)"
        seed = "random" if params.seed is None else params.seed
        settings = (f"system: {system[:60]}{'…' if len(system) > 60 else ''} · temp {params.temperature} · "
                    f"top-p {params.top_p} · top-k {params.top_k} · min-p {params.min_p} · "
                    f"repeat {params.repeat_penalty} · max {params.max_tokens} · seed {seed}")
        self.query_one("#settings-line", Static).update(Text(safe_text(settings), style="dim"))
        scenario = session.scenario
        line = self.query_one("#scenario-line", Static)
        line.display = scenario is not None
        if scenario is not None:
            keys = " · F7 next item" if scenario.has_items else ""
            line.update(Text.assemble((f"{scenario.title}{keys} · ", "bold"), (scenario.description, "italic")))
        for model_id, pane in self.panes.items():
            pane.overrides = self.override_text(model_id)
            pane.refresh_header()

    # --- other screens -------------------------------------------------------------------------

    def action_settings(self) -> None:
        from tui.screens.settings import SettingsScreen

        self.app.push_screen(SettingsScreen(self.session), lambda changed: self.refresh_title())

    def action_models(self) -> None:
        from tui.screens.models import ModelsScreen

        self.app.push_screen(ModelsScreen(self.app.config.catalog, self.session),  # type: ignore[attr-defined]
                             self.apply_models)

    async def apply_models(self, wanted: list | None) -> None:  # type: ignore[type-arg]
        if wanted is None:
            return
        wanted_ids = {card.id for card in wanted}
        for model_id in [m for m in self.panes if m not in wanted_ids]:
            await self.remove_pane(model_id)
        for card in wanted:
            if card.id not in self.panes:
                model = self.app.config.make_backend(card)  # type: ignore[attr-defined]
                self.session.add_model(model)
                await self.add_pane(model)
        self.refresh_title()

    async def action_new_session(self) -> None:
        await self.action_cancel_all()
        await self.session.start_over()
        for pane in self.panes.values():
            await pane.clear()
            if pane.state not in ("error", "waiting", "fetching", "loading"):
                pane.state = "ready"
        self.refresh_title()
        self.notify("New session: history cleared; the transcript starts with the next turn")

    def action_scenario(self) -> None:
        from tui.screens.scenarios import ScenarioScreen

        current = self.session.scenario.id if self.session.scenario else None
        self.app.push_screen(ScenarioScreen(self.app.config.scenarios, current),  # type: ignore[attr-defined]
                             self.start_scenario)

    async def start_scenario(self, scenario: Scenario | None) -> None:
        if scenario is None:
            return
        await self.action_cancel_all()
        await self.session.start_over(scenario)
        for pane in self.panes.values():
            await pane.clear()
        self.refresh_title()
        self.notify(scenario.description, title=scenario.title, timeout=8)
        if scenario.first_turn:
            self.send_turn(scenario.first_turn)

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen(self.BINDINGS))

    def palette_commands(self) -> Iterator[SystemCommand]:
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.description and not binding.action.startswith("scroll"):
                yield SystemCommand(binding.description, f"{binding.description} ({binding.key})",
                                    lambda action=binding.action: self.run_action(action))
