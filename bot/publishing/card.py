"""The model card (README.md with YAML metadata) and the folder's images, from a run's facts.

    >>> import json
    >>> from bot.publishing.card import render_card
    >>> from bot.common.config import load_settings
    >>> facts = json.loads(open("models/dreamy_kettle/run.json", encoding="utf-8").read())
    >>> card = render_card(facts, load_settings())       # a huggingface_hub ModelCard
    >>> card.data.pipeline_tag, card.data.language
    ('text-generation', ['en'])

`bot.training.train` calls `write_images` and `write_card` while it writes a model folder; both read only the
facts that also go to `run.json`, so a card can be re-rendered from a finished folder.

The body comes from the jinja2 template `bot/publishing/cards/model_card.md.j2` (package data), the YAML header from
huggingface_hub's `ModelCardData`. Every value the template prints is escaped for both HTML and
Markdown unless it is marked safe (`markupsafe.Markup`), so text from users (display names,
handles, posts, samples) shows as text whatever it holds: it makes no link, even on a renderer that
links bare addresses (`www.…`, `name@host`, `https://…`, `evil.com`), pings no one and cannot reorder
what is shown around it (bidi controls are dropped). The template's own text is written as is.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from urllib.parse import quote, urlsplit

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from markupsafe import Markup

from bot.common.config import Settings
from bot.common.errors import HandleError
from bot.common.handles import network_of, normalize_handle
from bot.publishing.facts import STOP_REASONS

# Inside the package, so a wheel install carries it.
TEMPLATE_DIR = Path(__file__).resolve().parent / "cards"
TEMPLATE = "model_card.md.j2"
HUB_URL = "https://huggingface.co"
# Characters that mean something in HTML or in the Hub's Markdown (emphasis, code, links, tables,
# strikethrough, headings, images, math, mentions, emoji shortcodes), written as numeric character
# references: they show as themselves in HTML blocks, in Markdown text and inside table cells.
_ESCAPES = {ord(c): f"&#{ord(c)};" for c in "&<>\"'\\`*_[]|~#!$@:{}"}
_NEWLINES = re.compile(r"[\r\n\u2028\u2029]+")
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
AVATAR_RE = re.compile(r"^https://[A-Za-z0-9.-]+/[^\s\"'<>]*$")
# X's legacy language codes and the ISO 639-1 codes the Hub expects.
LANGUAGE_CODES = {"in": "id", "iw": "he", "ji": "yi", "zh-cn": "zh", "zh-tw": "zh"}


# Bidi controls (embeddings, overrides, isolates, marks): they could make a name read as something else.
_BIDI_RE = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
# Where a renderer that links bare addresses would find one: a dot before a letter ("evil.com"; numbers
# such as 2.5 keep theirs; fullwidth and ideographic dots too), "www.", "://" and an e-mail's "@". An
# invisible word joiner there breaks the pattern and leaves the text as it reads. (Entities do not:
# renderers decode them before they look for addresses.)
_WORD_JOINER = "\u2060"
_DOTS = ".\uff0e\u3002\uff61"
_LINK_PATTERN_RE = re.compile(rf"(?<=\w)(?=[{_DOTS}][^\W\d_])|(?i:(?<=www))(?=[{_DOTS}])|(?<=:)(?=//)|(?<=@)(?!\u2060)")
AVATAR_HOSTS = {"pbs.twimg.com", "abs.twimg.com",  # X's image hosts
                "cdn.bsky.app"}                     # Bluesky's
PROFILE_URLS = {"x": "https://x.com/{}", "bluesky": "https://bsky.app/profile/{}"}
MODEL_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")  # transformers' model_type names
GPT2_RE = re.compile(r"^(openai-community/|distilbert/)?(distil)?gpt2(-medium|-large|-xl)?$")


def escape(text: object) -> Markup:
    r"""Text that shows as itself in HTML and Markdown, on one line, and makes no link.

        >>> escape("see www.example.com *now*")   # word joiners (invisible) before the dots
        Markup('see www\u2060.example\u2060.com &#42;now&#42;')
    """
    text = _BIDI_RE.sub("", _NEWLINES.sub(" ", str(text)))
    return Markup(_LINK_PATTERN_RE.sub(_WORD_JOINER, text).translate(_ESCAPES))


def _finalize(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return escape(value)


_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), finalize=_finalize,
                          trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                          undefined=jinja2.StrictUndefined, autoescape=False)


def thumbnail_url(organization: str, name: str) -> str:
    """The repo's own predictions.png on the Hub (the card's `thumbnail`)."""
    return f"{HUB_URL}/{organization}/{name}/resolve/main/predictions.png"


def playground_url(settings: Settings, model_name: str | None = None) -> str:
    """The playground Space (`huggingtweets space deploy`), with the model chosen when one is named."""
    url = f"{HUB_URL}/spaces/{settings.hub.organization}/{settings.space.name}"
    return f"{url}?model={quote(model_name, safe='')}" if model_name else url


def hub_languages(codes: list[str]) -> list[str]:
    out = []
    for code in codes:
        code = LANGUAGE_CODES.get(code.lower(), code.lower().split("-")[0])
        if re.fullmatch(r"[a-z]{2,3}", code) and code not in out:
            out.append(code)
    return out


def card_data(facts: dict, settings: Settings) -> ModelCardData:
    """The YAML header: language, license, base model, tags, the widget with an example output,
    the thumbnail and the validation perplexity as a model-index entry."""
    widget = {"text": facts["prompt"]}
    if facts.get("best_sample"):
        widget["output"] = {"text": facts["best_sample"]}
    eval_results = None
    if facts.get("validation_perplexity") is not None:
        eval_results = [EvalResult(
            task_type="text-generation", task_name="Text generation", dataset_type="x-posts",
            dataset_name=f"Held-out posts of {', '.join('@' + h for h in facts['handles'])}",
            dataset_split="validation", metric_type="perplexity", metric_name="Validation perplexity",
            metric_value=facts["validation_perplexity"])]
    return ModelCardData(
        language=hub_languages(facts.get("language") or []) or None,
        license=facts["license"],
        library_name="transformers",
        pipeline_tag="text-generation",
        base_model=facts.get("base_model_hub_id"),
        tags=["huggingtweets", "text-generation", *architecture_tags(facts)],
        widget=[widget],
        thumbnail=thumbnail_url(settings.hub.organization, facts["name"]),
        model_name=facts["name"],
        eval_results=eval_results,
    )


def architecture_tags(facts: dict) -> list[str]:
    """The base model's own architecture as a tag ("gpt2", "llama", ...: its config.json model_type), so the
    Hub lists the model with its kind; none when the run did not record it."""
    model_type = facts.get("base_model_type")
    return [model_type] if isinstance(model_type, str) and MODEL_TYPE_RE.fullmatch(model_type) else []


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {round(seconds % 60)} s"


def _hardware(hw: dict) -> str:
    if hw.get("device") == "cuda":
        return f"{hw.get('count', 1)} × {hw.get('name', 'GPU')}"
    return f"CPU ({hw.get('name', 'unknown')}, {hw.get('threads', '?')} threads)"


def _base_model(facts: dict) -> tuple[str, Markup]:
    """The base model's kind ("gpt2", "hub", "tiny" or "local") and how the card names it."""
    hub_id = facts.get("base_model_hub_id")
    if hub_id and HUB_ID_RE.fullmatch(hub_id):
        link = Markup(f"[{escape(hub_id)}]({HUB_URL}/{hub_id})")
        return ("gpt2" if GPT2_RE.fullmatch(hub_id.lower()) else "hub"), link
    if facts["base_model"] == "tiny":
        return "tiny", Markup("a tiny GPT-2 built locally (2 layers, 64 wide, pretrained on the Jargon File)")
    return "local", Markup("the local model ") + escape(facts["base_model"])


def _avatar(url: str | None) -> Markup | None:
    """An https URL on X's or Bluesky's image hosts, escaped for an HTML attribute; anything else is left out."""
    if not (url and AVATAR_RE.fullmatch(url)):
        return None
    parts = urlsplit(url)
    if parts.netloc != parts.hostname or parts.hostname not in AVATAR_HOSTS:  # no port, no user, exactly the host
        return None
    return Markup(html.escape(url, quote=True))


def _profile_url(handle: str) -> Markup | None:
    """The person's profile on their network, for a valid handle only."""
    try:
        handle = normalize_handle(handle)
    except HandleError:
        return None
    return Markup(PROFILE_URLS[network_of(handle)].format(handle))


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def render_card(facts: dict, settings: Settings) -> ModelCard:
    """The model card for a run, from its facts (the content of run.json)."""
    from bot.data.dataset import COUNT_ROWS

    accounts = facts["accounts"]
    # "@name" with a word joiner after the "@": shown as written, read by no renderer as a mention.
    network = "bluesky" if any(network_of(h) == "bluesky" for h in facts["handles"]) else "x"
    users = [{"profile_url": _profile_url(h),
              "at_username": Markup("@" + _WORD_JOINER) + escape(accounts[h]["username"]),
              "display_name": accounts[h]["display_name"], "avatar_url": _avatar(accounts[h]["avatar_url"])}
             for h in facts["handles"]]
    counts = facts["users"]
    rows = [{"label": row.capitalize(), "values": [f"{counts[h][row]:,}" for h in facts["handles"]]} for row in COUNT_ROWS]
    rows.append({"label": "Language", "values": [counts[h]["language"] or "?" for h in facts["handles"]]})
    hp = facts["hyperparameters"]
    base_kind, base_model_text = _base_model(facts)
    # Posts trained on, each once; older run.json files lack the field and count the training set's texts.
    train_posts = facts.get("distinct_train_posts") or facts.get("train_posts") or sum(counts[h]["kept"] for h in facts["handles"])
    durations = facts.get("durations_s", {})
    prompt_literal = json.dumps(facts["prompt"], ensure_ascii=False).replace("`", "\\u0060")
    content = _env.get_template(TEMPLATE).render(
        card_data=Markup(card_data(facts, settings).to_yaml()),
        users=users,
        network=network,
        num_people="one person" if len(users) == 1 else f"{len(users)} people",
        train_posts=f"{train_posts:,}",
        train_posts_text=_count(train_posts, "post"),
        organization=Markup(settings.hub.organization),  # validated by the settings: a Hub name
        bot_handle=settings.bot.handle,
        made_by_bot=bool(facts.get("made_by_bot")),
        model_id=Markup(facts["model_id"]) if HUB_ID_RE.fullmatch(facts["model_id"]) else "",
        playground_url=Markup(html.escape(playground_url(settings, facts["name"]), quote=True)),
        prompt=facts["prompt"],
        prompt_literal=Markup(prompt_literal),
        samples=facts["samples"],
        dropped=facts.get("samples_dropped_as_memorised", 0),
        count_rows=rows,
        min_words=settings.data.min_words,
        base_kind=base_kind,
        base_model_text=base_model_text,
        passes=f"{facts['epochs_run']:g}",
        steps=f"{facts['steps']:,}",
        best_step=f"{facts['best_step']:,}",
        stop_reason=STOP_REASONS[facts["stop_reason"]],
        learning_rate=f"{hp['learning_rate']:g}",
        batch_size=hp["batch_size"],
        block_size=hp["block_size"],
        tokens_seen=f"{facts['tokens_seen']:,}",
        precision=hp["precision"],
        hardware=_hardware(facts["hardware"]),
        train_time=_duration(durations.get("train", 0.0)),
        total_time=_duration(durations.get("total", 0.0)),
        seed=facts["seed"],
        validation_posts=f"{facts['validation_posts']:,}",
        validation_tokens=f"{facts['validation_tokens']:,}",
        validation_loss=facts["validation_loss"],
        perplexity=facts["validation_perplexity"],
    )
    return ModelCard(content)


def write_card(folder: str | Path, facts: dict, settings: Settings) -> Path:
    """Render the card and write it as `README.md` (UTF-8) in `folder`."""
    path = Path(folder) / "README.md"
    path.write_text(str(render_card(facts, settings)), encoding="utf-8")
    return path


def write_images(folder: str | Path, facts: dict) -> None:
    """`predictions.png` (up to three samples, the best first) and `loss_curve.png`."""
    from bot.publishing.images import loss_curve_image, predictions_image, save_png

    folder = Path(folder)
    accounts = facts["accounts"]
    best = facts.get("best_sample")
    shown = ([best] if best else []) + [s for s in facts["samples"] if s != best]
    save_png(predictions_image([accounts[h]["display_name"] for h in facts["handles"]],
                               [accounts[h]["username"] for h in facts["handles"]], facts["prompt"], shown[:3]),
             folder / "predictions.png")
    save_png(loss_curve_image(facts["step_losses"], facts["history"], facts["best_step"]), folder / "loss_curve.png")
