"""The conversation the models of a session share, and what each model is sent for a turn: its
own view of the history as chat messages, or, for a base model, a scenario item asked few-shot."""

from __future__ import annotations

from dataclasses import dataclass, field

from tui.cards import ModelCard
from tui.checks import Item
from tui.engine.events import Message, SamplingParams, TurnRequest
from tui.lab.tasks import FEW_SHOT_STOP, chat_few_shot
from tui.scenario import Scenario

# Shown with a reply to a few-shot request (see `Conversation.request_for`).
FEW_SHOT_NOTICE = "a base model: asked few-shot, as the lab asks it (Settings turns this off)"


@dataclass
class Conversation:
    system: str = ""
    opening: tuple[tuple[str, str], ...] = ()  # a scenario's few-shot turns, seen by every model
    user_turns: list[str] = field(default_factory=list)
    replies: dict[str, dict[int, str]] = field(default_factory=dict)  # model id -> turn -> text

    def messages_for(self, model_id: str, largest_first: list[str], upto: int | None = None) -> list[Message]:
        """The history as this model sees it, ending with user turn `upto` (default: the last).

        A model sees its own replies. For a turn it did not answer (it joined later, or
        was still loading) it sees the reply of the largest model that did, so that a
        newcomer gets a coherent conversation; failing that, an empty reply, because
        chat templates need user and assistant turns to alternate.
        """
        upto = len(self.user_turns) if upto is None else upto
        messages: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        for user, assistant in self.opening:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        for turn, text in enumerate(self.user_turns[:upto], start=1):
            messages.append({"role": "user", "content": text})
            if turn < upto:
                messages.append({"role": "assistant", "content": self.reply_seen_by(model_id, turn, largest_first)})
        return messages

    def reply_seen_by(self, model_id: str, turn: int, largest_first: list[str]) -> str:
        for source in (model_id, *largest_first):
            if turn in self.replies.get(source, {}):
                return self.replies[source][turn]
        return ""

    def request_for(
        self,
        card: ModelCard,
        turn: int,
        largest_first: list[str],
        params: SamplingParams,
        *,
        scenario: Scenario | None,
        item: Item | None,
        few_shot: bool,
        logprobs: bool,
    ) -> TurnRequest:
        """What this model is sent for user turn `turn`, which asks scenario `item` if given.

        An item of a fresh-context scenario is asked alone (after the system prompt and opening
        turns); to a base model, when `few_shot` is on, it is asked few-shot, as the lab asks it.
        """
        if item is not None and scenario is not None and scenario.fresh_context:
            if few_shot and not card.instruct:
                prompt = chat_few_shot(scenario, item)
                return TurnRequest([], params, completion=prompt, stop=FEW_SHOT_STOP, logprobs=logprobs)
            messages = self.messages_for(card.id, largest_first, upto=0)
            messages.append({"role": "user", "content": self.user_turns[turn - 1]})
        else:
            messages = self.messages_for(card.id, largest_first, upto=turn)
        return TurnRequest(messages, params, logprobs=logprobs)
