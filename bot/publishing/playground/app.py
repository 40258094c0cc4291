"""The huggingtweets playground: generate text from any model of the organisation, in the browser.

On a Hugging Face Space (`huggingtweets space deploy` uploads this file, `bot/data/text.py` and
`space_settings.json`) it lists the organisation's models on the Hub; on this machine
`huggingtweets space run` serves the same app, reading the local Hub folder when `[hub] backend = "local"`.

    >>> playground = Playground(LocalModels(settings.hub), cache_size=3)    # or HubModels("huggingtweets")
    >>> [m.name for m in playground.models()]                              # newest first
    ['alice-bob', 'dreamy_kettle']
    >>> playground.generate("alice-bob", "My dream is").samples             # 3 samples, plain text
    ['My dream is to …', …]
    >>> build_app(playground).launch(server_name="127.0.0.1", server_port=7860)

`/?model=alice-bob` opens the page with that model chosen (the model cards link there); a name that is not
published says so instead of showing another model. Generate shows once the page has its model. Samples are shown
in text boxes, never as HTML or Markdown, with every @mention broken by an invisible character
(`bot.data.text.neutralise_mentions`), under a line saying the text is generated, not the person's.
A model that is deleted (someone opted out) leaves the list at the next refresh and can no longer be used.

A prompt may take the model's positions less the tokens it writes. Generations wait their turn (one runs at
a time: a CPU Space has two cores), at most `queue_size` of them in all and `queue_per_visitor` for one
visitor (by address); one more is refused at once with a message saying why.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bot.data.text import neutralise_mentions

DEFAULT_PROMPT = "My dream is"
# A bound checked before tokenizing; the real limit is in tokens: the model's positions less what it writes.
MAX_PROMPT_CHARS = 10_000
# The files that make a model folder loadable, and run.json (its prompt and handles): no images, no card.
MODEL_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer*", "vocab.json",
               "merges.txt", "special_tokens_map.json", "run.json"]
SETTINGS_FILE = "space_settings.json"


class PlaygroundError(Exception):
    """Something a visitor can fix or wait out; the message is shown to them as it is."""


class Admission:
    """How many generations may wait or run at once: `total` in all, `per_visitor` for one visitor.

        >>> admission = Admission(per_visitor=2, total=8)
        >>> with admission.slot("203.0.113.7"):     # PlaygroundError at once when a bound is reached
        ...     generate()

    A slot is held from the moment a generation is asked for until it ends, so a full playground refuses
    at once rather than keeping a visitor waiting behind someone's hundred requests.
    """

    def __init__(self, per_visitor: int, total: int):
        if per_visitor < 1 or total < per_visitor:
            raise ValueError("admit at least one generation per visitor, and no more per visitor than in all")
        self.per_visitor, self.total = per_visitor, total
        self.held: Counter[str] = Counter()
        self.lock = threading.Lock()

    @contextmanager
    def slot(self, visitor: str) -> Iterator[None]:
        with self.lock:
            if sum(self.held.values()) >= self.total:
                raise PlaygroundError(f"The playground is busy ({self.total} generations are waiting or running). "
                                      "Try again in a minute.")
            if self.held[visitor] >= self.per_visitor:
                raise PlaygroundError(f"You already have {self.held[visitor]} generations waiting or running; "
                                      "ask for another when one of them is done.")
            self.held[visitor] += 1
        try:
            yield
        finally:
            with self.lock:
                self.held[visitor] -= 1
                if not self.held[visitor]:
                    del self.held[visitor]


@dataclass(frozen=True)
class ModelEntry:
    """One model of the organisation: `name` ('alice-bob'), its repo, and the commit it is at."""

    name: str
    repo_id: str
    revision: str  # a new publish is a new revision: the cache never serves old weights for it
    modified: datetime


class HubModels:
    """The organisation's models on the Hugging Face Hub (`HF_ENDPOINT` and `HF_TOKEN` as the library reads them)."""

    def __init__(self, organization: str, cache_dir: str | os.PathLike | None = None):
        from huggingface_hub import HfApi

        self.organization, self.cache_dir = organization, cache_dir  # None: huggingface_hub's own cache
        self.api = HfApi(library_name="huggingtweets-playground")

    def list(self) -> list[ModelEntry]:
        found = self.api.list_models(author=self.organization, sort="last_modified",
                                     expand=["lastModified", "sha"])
        epoch = datetime.fromtimestamp(0, timezone.utc)
        return [ModelEntry(m.id.split("/", 1)[1], m.id, m.sha or "main", m.last_modified or epoch)
                for m in found if m.id.startswith(f"{self.organization}/")]

    def folder(self, entry: ModelEntry) -> Path:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(entry.repo_id, revision=entry.revision, allow_patterns=MODEL_FILES,
                                      cache_dir=self.cache_dir))


class LocalModels:
    """The organisation's models in a local Hub folder (`[hub] backend = "local"`, as the demo writes it)."""

    def __init__(self, hub_settings):
        from bot.publishing.hub import LocalRepos  # only here: on a Space the models are on the Hub

        self.repos = LocalRepos(hub_settings)

    def list(self) -> list[ModelEntry]:
        entries = []
        for repo_id in self.repos.list_repos():
            history = self.repos.history(repo_id)
            if history:  # a repo folder without a commit is not a model yet
                entries.append(ModelEntry(repo_id.split("/", 1)[1], repo_id, history[-1]["commit"],
                                          datetime.fromisoformat(history[-1]["time"])))
        return entries

    def folder(self, entry: ModelEntry) -> Path:
        return (self.repos.local_dir / entry.repo_id).resolve()  # the version folder, not the moving link


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    facts: dict  # run.json ({} when the folder has none)


@dataclass(frozen=True)
class Generation:
    notice: str  # who did not write this
    samples: list[str]
    seconds: float


class ModelCache:
    """The `size` models used last, in memory; loading one more forgets the least recently used."""

    def __init__(self, size: int, load: Callable[[ModelEntry], LoadedModel]):
        if size < 1:
            raise ValueError("the cache holds at least one model")
        self.size, self.load = size, load
        self.models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, entry: ModelEntry) -> LoadedModel:
        key = (entry.repo_id, entry.revision)
        with self.lock:  # one load at a time: two visitors choosing the same model load it once
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
            while len(self.models) >= self.size:
                self.models.popitem(last=False)
            loaded = self.models[key] = self.load(entry)
            return loaded

    def keep_only(self, entries: list[ModelEntry]) -> None:
        """Forget models that are no longer listed (deleted, or published again)."""
        listed = {(e.repo_id, e.revision) for e in entries}
        with self.lock:
            for key in [k for k in self.models if k not in listed]:
                del self.models[key]

    def __len__(self) -> int:
        return len(self.models)


class Playground:
    """What the page does, without the page: the list of models, and generation from one of them."""

    def __init__(self, source: HubModels | LocalModels, cache_size: int = 3, num_samples: int = 3,
                 max_new_tokens: int = 40, refresh_seconds: float = 60.0, shown: int = 200,
                 queue_size: int = 8, queue_per_visitor: int = 2):
        self.source = source
        self.cache = ModelCache(cache_size, self._load)
        self.admission = Admission(per_visitor=queue_per_visitor, total=queue_size)
        self._generating = threading.Lock()  # one generation at a time: it uses every core
        self.num_samples, self.max_new_tokens = num_samples, max_new_tokens
        self.refresh_seconds, self.shown = refresh_seconds, shown
        self._listed: list[ModelEntry] = []
        self._listed_at = -float("inf")
        self._list_lock = threading.Lock()

    def models(self) -> list[ModelEntry]:
        """Every model, newest first; read again when older than `refresh_seconds`."""
        with self._list_lock:
            if time.monotonic() - self._listed_at >= self.refresh_seconds:
                entries = sorted(self.source.list(), key=lambda e: e.name)
                self._listed = sorted(entries, key=lambda e: e.modified, reverse=True)
                self._listed_at = time.monotonic()
                self.cache.keep_only(self._listed)
            return self._listed

    def find(self, query: str) -> list[ModelEntry]:
        """The newest `shown` models whose name holds `query` ('@alice', 'alice' or 'ali')."""
        needle = query.strip().lstrip("@＠").lower()
        return [e for e in self.models() if needle in e.name.lower()][: self.shown]

    def entry(self, name: str | None) -> ModelEntry:
        found = self.published(name)
        if found is None:
            raise PlaygroundError("Choose a model from the list (this one is not, or no longer, published)."
                                  if name else "Choose a model from the list.")
        return found

    def published(self, name: str | None) -> ModelEntry | None:
        """The model of that name, or None when no such model is published."""
        return next((e for e in self.models() if e.name == name), None) if name else None

    def facts(self, name: str) -> dict:
        """The model's run.json (loading the model if it is not in memory yet)."""
        return self.cache.get(self.entry(name)).facts

    def default_prompt(self, name: str | None) -> str:
        try:
            return self.facts(name).get("prompt") or DEFAULT_PROMPT
        except PlaygroundError:
            return DEFAULT_PROMPT

    def notice(self, name: str) -> str:
        """'Generated by the model huggingtweets/alice-bob: not written by @alice or @bob.' (mentions broken)"""
        entry = self.entry(name)
        handles = self.facts(name).get("handles") or entry.name.split("-")
        people = " or ".join(f"@{h}" for h in handles)
        return neutralise_mentions(f"Generated by the model {entry.repo_id}, not written by {people}. "
                                   f"It makes things up: do not present it as something they said.")

    def generate(self, name: str | None, prompt: str | None, visitor: str = "local") -> Generation:
        """`num_samples` samples from `prompt` (or the model's own prompt) with the model's generation config.

        Waits for the generation before it; `visitor` (an address) counts against `queue_per_visitor`."""
        started = time.perf_counter()
        entry = self.entry(name)
        if len(prompt or "") > MAX_PROMPT_CHARS:
            raise PlaygroundError(f"The prompt is too long: at most {MAX_PROMPT_CHARS:,} characters.")
        with self.admission.slot(visitor), self._generating:
            return self._generate(entry, prompt, started)

    def _generate(self, entry: ModelEntry, prompt: str | None, started: float) -> Generation:
        import torch

        loaded = self.cache.get(entry)
        prompt = (prompt or "").strip() or loaded.facts.get("prompt") or DEFAULT_PROMPT
        tokenizer, model = loaded.tokenizer, loaded.model
        config = copy.deepcopy(model.generation_config)
        config.max_new_tokens = min(config.max_new_tokens or self.max_new_tokens, self.max_new_tokens)
        config.pad_token_id = config.pad_token_id if config.pad_token_id is not None else tokenizer.eos_token_id
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        # The prompt and what the model writes share its positions (GPT-2: 1,024); past them it fails.
        room = prompt_room(model.config, config.max_new_tokens)
        if ids.shape[1] > room:
            raise PlaygroundError(f"The prompt is too long for this model: {ids.shape[1]:,} tokens, and it takes "
                                  f"at most {room:,} (it writes up to {config.max_new_tokens} more within its "
                                  f"{room + config.max_new_tokens:,} positions).")
        ids = ids.expand(self.num_samples, -1)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
        samples = []
        for row in out[:, ids.shape[1]:].tolist():
            if tokenizer.eos_token_id in row:  # one post ends at the end-of-text token
                row = row[: row.index(tokenizer.eos_token_id)]
            text = tokenizer.decode(row, skip_special_tokens=True).replace("\ufffd", "")  # a cut-off character
            samples.append(neutralise_mentions((prompt + text).strip()))
        return Generation(self.notice(entry.name), samples, time.perf_counter() - started)

    def _load(self, entry: ModelEntry) -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = self.source.folder(entry)
        model = AutoModelForCausalLM.from_pretrained(folder)
        model.eval()
        facts_path = folder / "run.json"
        facts = json.loads(facts_path.read_text(encoding="utf-8")) if facts_path.exists() else {}
        return LoadedModel(model, AutoTokenizer.from_pretrained(folder), facts)


def prompt_room(model_config, max_new_tokens: int) -> int:
    """Tokens a prompt may take: the model's positions (n_positions, max_position_embeddings) less the
    `max_new_tokens` it writes after it; at least 1."""
    positions = getattr(model_config, "n_positions", None) or getattr(model_config, "max_position_embeddings", None)
    return max(1, (positions or 1024) - max_new_tokens)


def visitor_of(request) -> str:
    """Who is asking, for the per-visitor bound: the address the request came from. Behind a proxy (a
    Space) that is the first address of X-Forwarded-For, the visitor's as the proxy received it."""
    if request is None:
        return "unknown"
    forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[0].strip()
    client = getattr(request, "client", None)
    return forwarded or (client.host if client else "") or "unknown"


INTRO = """# Try a huggingtweets model

Each model here is GPT-2 fine-tuned on the public posts of one to three people. Choose one, write the start
of a post, and it writes three endings. **What it writes is generated text, not something the person said.**
"""


def build_app(playground: Playground):
    """The page: find and choose a model, a prompt, Generate, and the samples in plain text boxes."""
    import gradio as gr

    def choices(entries: list[ModelEntry]) -> list[tuple[str, str]]:
        return [(f"{e.name}  ({e.modified:%Y-%m-%d})", e.name) for e in entries]

    def chosen(name: str | None) -> tuple[str, str, Any]:
        """The prompt, the notice and the Generate button for a choice: the button shows only while a
        published model is chosen, so a click always has a model to generate from."""
        if not name:
            return DEFAULT_PROMPT, "", gr.Button(visible=False)
        try:
            return playground.default_prompt(name), playground.notice(name), gr.Button(visible=True)
        except PlaygroundError as e:
            return DEFAULT_PROMPT, str(e), gr.Button(visible=False)

    def wanted(request) -> str | None:
        """The model named in the page's address (`?model=alice-bob`), as the model cards link."""
        return request.query_params.get("model") if request is not None else None

    def on_load(request: gr.Request):
        entries = playground.find("")
        name = wanted(request)
        picked = playground.published(name)
        if name and picked is None:  # a removed model, or a mistyped link: say so rather than show another
            notice = neutralise_mentions(f"No model named “{name[:100]}” is published here (it may have been "
                                         "removed). Choose one from the list.")
            return gr.Dropdown(choices=choices(entries), value=None), DEFAULT_PROMPT, notice, gr.Button(visible=False)
        if picked is not None and picked not in entries:
            entries = [picked, *entries]
        name = picked.name if picked else (entries[0].name if entries else None)
        prompt, notice, button = chosen(name)
        if not entries:
            notice = "No model is published yet."
        return gr.Dropdown(choices=choices(entries), value=name), prompt, notice, button

    def on_search(query: str, current: str | None):
        entries = playground.find(query or "")
        names = [e.name for e in entries]
        name = current if current in names else (names[0] if names else None)
        return gr.Dropdown(choices=choices(entries), value=name), *chosen(name)

    def on_choose(name: str | None):
        return *chosen(name), *([""] * playground.num_samples)

    def on_generate(name: str | None, prompt: str, request: gr.Request):
        # Enter in the prompt box can come before the page has set its model: take the address's.
        name = name or wanted(request)
        try:
            result = playground.generate(name, prompt, visitor=visitor_of(request))
        except PlaygroundError as e:  # the visitor's to fix or wait out: shown to them, no traceback in the log
            raise gr.Error(str(e), print_exception=False) from None
        return result.notice, *result.samples

    # Gradio hands the request to a parameter annotated gr.Request; with postponed annotations it sees a
    # string, so the class itself is set here.
    on_load.__annotations__["request"] = on_generate.__annotations__["request"] = gr.Request

    with gr.Blocks(title="huggingtweets playground", analytics_enabled=False) as page:
        gr.Markdown(INTRO)
        with gr.Row():
            search = gr.Textbox(label="Find a model by handle", placeholder="alice", elem_id="search", scale=1)
            model = gr.Dropdown(label="Model (newest first)", choices=[], value=None, elem_id="model",
                                filterable=True, allow_custom_value=True, scale=2)  # checked by Playground.entry
        prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPT, max_lines=3, elem_id="prompt")
        # Hidden until the page has its model (on_load): a click before that had nothing to generate from.
        button = gr.Button("Generate", variant="primary", elem_id="generate", visible=False)
        notice = gr.Textbox(label="Whose words these are", interactive=False, elem_id="notice")
        samples = [gr.Textbox(label=f"Sample {i + 1}", interactive=False, lines=3, elem_id=f"sample-{i + 1}")
                   for i in range(playground.num_samples)]
        page.load(on_load, inputs=None, outputs=[model, prompt, notice, button], api_name=False)
        search.change(on_search, inputs=[search, model], outputs=[model, prompt, notice, button], api_name=False)
        model.input(on_choose, inputs=[model], outputs=[prompt, notice, button, *samples], api_name=False)
        # Each event waits for the one before it in Playground.generate (one at a time), which refuses at
        # once past queue_size (in all) or queue_per_visitor; as many threads as it admits, and Gradio's
        # own queue in front of them bounded the same way ("queue is full" past it).
        generate = {"fn": on_generate, "inputs": [model, prompt], "outputs": [notice, *samples],
                    "concurrency_limit": playground.admission.total, "concurrency_id": "generate"}
        button.click(**generate, api_name="generate")
        prompt.submit(**generate, api_name=False)
    page.queue(default_concurrency_limit=1, max_size=playground.admission.total)
    return page


def settings_for_space(folder: Path) -> dict:
    """The settings `huggingtweets space deploy` wrote beside this file."""
    return json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))


def main() -> None:
    settings = settings_for_space(Path(__file__).resolve().parent)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    playground = Playground(HubModels(settings["organization"]), cache_size=settings["cache_size"],
                            num_samples=settings["num_samples"], max_new_tokens=settings["max_new_tokens"],
                            refresh_seconds=settings["list_refresh_seconds"],
                            # absent from the settings of a deploy older than these bounds
                            queue_size=settings.get("queue_size", 8), queue_per_visitor=settings.get("queue_per_visitor", 2))
    build_app(playground).launch()


if __name__ == "__main__":
    main()
