"""The model folder's pictures, drawn with Pillow: the predictions card and the loss curve.

    >>> from bot.publishing.images import predictions_image, loss_curve_image
    >>> img = predictions_image(["Dreamy Kettle ☕"], ["dreamy_kettle"], "My dream is",
    ...                         ["My dream is a quiet garden by the sea"])
    >>> img.size
    (1200, 628)
    >>> img.save("predictions.png")

Same input, same pixels, on any machine. Each character is set in the first font that has it:
the Noto fonts installed with the project (`manimgx-fonts`: Noto Sans, Noto Sans Symbols, Noto Emoji
and Noto Sans for other scripts; `manimgx-fonts-cjk`: Noto Sans CJK; all SIL Open Font License 1.1),
then fonts found on the machine, then Pillow's built-in font. Without the packages (say, removed by
hand) the image is still drawn, from whatever the machine has, after one warning that says so.
Why these packages: docs/fonts.md. Long text wraps (between words, or between any two CJK characters)
and is cut with "…" rather than spilling out of its box.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import regex
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1200, 628  # the social-card ratio (1.91:1)
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts",
             "/System/Library/Fonts", "/Library/Fonts", "C:/Windows/Fonts")
# File names by preference. Colour-bitmap emoji fonts (NotoColorEmoji) need fixed sizes; they are left out.
REGULAR = ("NotoSans-Regular.ttf", "DejaVuSans.ttf", "LiberationSans-Regular.ttf", "Arial.ttf", "arial.ttf")
BOLD = ("NotoSans-Bold.ttf", "DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf", "Arial Bold.ttf", "arialbd.ttf")
FALLBACKS = ("NotoSansCJK-Regular.ttc", "NotoSansCJKjp-Regular.otf", "NotoSansJP-Regular.ttf",
             "NotoSansJP-Regular.otf", "NotoSansSC-Regular.otf", "NotoSansKR-Regular.otf", "wqy-microhei.ttc",
             "wqy-zenhei.ttc", "DroidSansFallbackFull.ttf", "DroidSansFallback.ttf", "NotoEmoji-Regular.ttf",
             "Symbola.ttf", "DejaVuSans.ttf", "unifont.otf")

INK, MUTED, ACCENT, PAPER, CARD = (28, 30, 38), (96, 102, 118), (255, 157, 0), (250, 248, 243), (255, 255, 255)
# Word-joiners and other invisible format characters: nothing to draw (they neutralise @mentions).
INVISIBLE_RE = regex.compile(r"\p{Cf}")
# Combining marks: drawn with the character before them.
MARK_RE = regex.compile(r"\p{M}")
# Emoji and their modifiers: left out when no installed font has them (better than an empty box).
EMOJI_RE = regex.compile(r"[\p{Extended_Pictographic}\p{Emoji_Modifier}\uFE0E\uFE0F]")
# Break opportunities: after spaces, and around every CJK character.
PIECES_RE = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}、。，！？]|[^\s\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]+\s*|\s+")


# Pip packages that carry fonts, and their files by preference: the Latin face (its weight set per
# use: the files are variable fonts), CJK, symbols, emoji, then the other scripts of Noto Sans.
PACKAGED_FONTS = (
    ("manimgx_fonts", ("NotoSans[wght].ttf",)),
    ("manimgx_fonts_cjk", ("NotoSansCJK-VF.otf.ttc",)),  # face 0 is Japanese; its kana and kanji cover zh/ko text too
    ("manimgx_fonts", ("NotoSansSymbols[wght].ttf", "NotoEmoji[wght].ttf", "*")),
)
REGULAR_WEIGHT, BOLD_WEIGHT = 400, 700
FONT_PACKAGES = {"manimgx_fonts": "manimgx-fonts", "manimgx_fonts_cjk": "manimgx-fonts-cjk"}  # module: pip name

log = logging.getLogger("huggingtweets.images")


@functools.cache
def packaged_font_files() -> tuple[str, ...]:
    """Paths of the fonts installed as packages, in the order they are tried; empty without them."""
    import importlib.util

    paths: list[str] = []
    missing: list[str] = []
    for module, names in PACKAGED_FONTS:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            if FONT_PACKAGES.get(module, module) not in missing:
                missing.append(FONT_PACKAGES.get(module, module))
            continue
        folder = Path(next(iter(spec.submodule_search_locations)))
        for name in names:
            found = sorted(folder.glob("*.tt[fc]")) if name == "*" else [folder / name]
            paths += [str(p) for p in found if p.is_file() and str(p) not in paths and "Italic" not in p.name]
    if missing:  # once a process: this function's result is cached
        log.warning("the font package%s %s %s not installed: pictures are drawn with this machine's fonts, so "
                    "some scripts or emoji may be missing (pip install %s)", "s" * (len(missing) > 1),
                    " and ".join(missing), "are" if len(missing) > 1 else "is", " ".join(missing))
    return tuple(paths)


@functools.cache
def _font_files() -> dict[str, str]:
    """File name -> path for every font file under the usual folders (first one found wins)."""
    found: dict[str, str] = {}
    for root in FONT_DIRS:
        root = os.path.expanduser(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                found.setdefault(name, os.path.join(dirpath, name))
    return found


def _load_font(path: str, size: int, bold: bool) -> ImageFont.FreeTypeFont:
    font = ImageFont.truetype(path, size)
    try:
        axes = font.get_variation_axes()
    except OSError:  # not a variable font: its weight is the file's
        return font
    weight = BOLD_WEIGHT if bold else REGULAR_WEIGHT
    font.set_variation_by_axes([min(max(weight, a["minimum"]), a["maximum"]) if a["name"] == b"Weight"
                                else a["default"] for a in axes])
    return font


@functools.cache
def font_chain(size: int, bold: bool = False) -> tuple[ImageFont.FreeTypeFont, ...]:
    """The fonts to try, in order, for one size and weight; never empty."""
    files = _font_files()
    paths = list(packaged_font_files())
    names = [next((n for n in (BOLD if bold else REGULAR) if n in files), None)]
    names += [n for n in REGULAR + FALLBACKS if n in files]
    paths += [files[n] for n in names if n]
    chain, seen = [], set()
    for path in paths:
        if path in seen:
            continue
        seen.add(path)
        try:
            chain.append(_load_font(path, size, bold))
        except OSError:  # a broken or unsupported file: skip it
            continue
    if not chain:
        chain.append(ImageFont.load_default(size))  # Pillow's own font: Latin only, but always there
    return tuple(chain)


@functools.cache
def _missing_glyph(font) -> bytes:
    return _glyph_bitmap(font, "\U0010fffd")  # a private-use character no font draws


def _glyph_bitmap(font, ch: str) -> bytes:
    mask = font.getmask(ch)
    return bytes(mask.size) + bytes(mask)


@functools.cache
def _font_for(chain: tuple, ch: str):
    """The first font in `chain` with a real glyph for `ch` (not its "missing" box), or None for an
    emoji no font has. Other characters no font has are drawn as the first font's box."""
    if ch.isspace():
        return chain[0]
    for font in chain:
        if _glyph_bitmap(font, ch) != _missing_glyph(font):
            return font
    return None if EMOJI_RE.fullmatch(ch) else chain[0]


def _runs(text: str, chain: tuple) -> list[tuple[str, object]]:
    """Split text into runs that share one font."""
    runs: list[tuple[str, object]] = []
    for ch in INVISIBLE_RE.sub("", text):
        if runs and MARK_RE.fullmatch(ch):  # a vowel sign or accent goes with its letter's font, to be shaped with it
            runs[-1] = (runs[-1][0] + ch, runs[-1][1])
            continue
        font = _font_for(chain, ch)
        if font is None:
            continue
        if runs and runs[-1][1] is font:
            runs[-1] = (runs[-1][0] + ch, font)
        else:
            runs.append((ch, font))
    return runs


def text_width(text: str, chain: tuple) -> float:
    return sum(font.getlength(run) for run, font in _runs(text, chain))


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, chain: tuple, fill) -> float:
    """Draw one line with per-character font fallback; returns the x where it ends."""
    x, y = xy
    for run, font in _runs(text, chain):
        draw.text((x, y), run, font=font, fill=fill)
        x += font.getlength(run)
    return x


Span = tuple[str, bool]  # (text, bold)


def wrap(spans: list[Span], width: float, max_lines: int, size: int) -> list[list[Span]]:
    """Lay styled text out in lines no wider than `width`; at most `max_lines`, the last cut with '…'."""
    pieces = [(p, bold) for text, bold in spans for p in PIECES_RE.findall(regex.sub(r"\s+", " ", text))]
    lines: list[list[Span]] = [[]]
    used = 0.0
    for piece, bold in pieces:
        chain = font_chain(size, bold)
        w = text_width(piece.rstrip(), chain)
        if used and used + w > width:
            lines.append([])
            used = 0.0
        if not lines[-1]:  # no space at the start of a line
            piece = piece.lstrip()
            w = text_width(piece.rstrip(), chain)
        while w > width:  # a single word wider than the line: break it by characters
            head = piece
            while len(head) > 1 and text_width(head, chain) > width:
                head = head[:-1]
            lines[-1].append((head, bold))
            lines.append([])
            piece = piece[len(head):]
            w = text_width(piece.rstrip(), chain)
        if piece:
            lines[-1].append((piece, bold))
            used += text_width(piece, chain)
    lines = [_merge(line) for line in lines if line]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        text, bold = last[-1]
        chain = font_chain(size, bold)
        room = width - sum(text_width(t, font_chain(size, b)) for t, b in last[:-1])
        text = text.rstrip()
        while text and text_width(text + "…", chain) > room:
            text = text[:-1].rstrip()
        last[-1] = (text + "…", bold)
    return lines


def _merge(line: list[Span]) -> list[Span]:
    """Join neighbouring pieces of the same style."""
    merged: list[Span] = []
    for text, bold in line:
        if merged and merged[-1][1] == bold:
            merged[-1] = (merged[-1][0] + text, bold)
        else:
            merged.append((text, bold))
    return merged


def draw_spans(draw, x: float, y: float, line: list[Span], size: int, fill, bold_fill=None) -> None:
    for text, bold in line:
        x = draw_text(draw, (x, y), text, font_chain(size, bold), bold_fill if bold and bold_fill else fill)


def predictions_image(display_names: list[str], handles: list[str], prompt: str, samples: list[str]) -> Image.Image:
    """The 1200x628 card: who, the prompt, and one to three samples (the prompt in bold)."""
    img = Image.new("RGB", (WIDTH, HEIGHT), PAPER)
    draw = ImageDraw.Draw(img)
    margin = 56
    draw.rectangle((0, 0, WIDTH, 10), fill=ACCENT)

    # Who: display names on one line, handles below, "AI BOT" / "AI CYBORG" on the right.
    label = "AI BOT" if len(handles) == 1 else "AI CYBORG"
    label_w = text_width(label, font_chain(26, True))
    draw.rounded_rectangle((WIDTH - margin - label_w - 36, 44, WIDTH - margin, 92), radius=24, fill=INK)
    draw_text(draw, (WIDTH - margin - label_w - 18, 52), label, font_chain(26, True), CARD)
    name_width = WIDTH - 2 * margin - label_w - 60
    for i, line in enumerate(wrap([(" & ".join(display_names), True)], name_width, 1, 44)):
        draw_spans(draw, margin, 40 + i * 54, line, 44, INK)
    for line in wrap([("  ·  ".join(f"@{h}" for h in handles), False)], name_width, 1, 28):
        draw_spans(draw, margin, 100, line, 28, MUTED)

    # Samples: each in a white box; the boxes share the space that is left.
    shown = [s for s in samples if s.strip()][:3] or [prompt + " …"]
    top, bottom, gap = 160, HEIGHT - 56, 20
    box_h = (bottom - top - gap * (len(shown) - 1)) / len(shown)
    size = 30 if len(shown) == 1 else 26
    line_h = int(size * 1.4)
    for i, sample in enumerate(shown):
        y0 = top + i * (box_h + gap)
        draw.rounded_rectangle((margin, y0, WIDTH - margin, y0 + box_h), radius=18, fill=CARD, outline=(230, 226, 216))
        inner = WIDTH - 2 * margin - 56
        max_lines = max(1, int((box_h - 36) // line_h))
        rest = sample[len(prompt):] if sample.startswith(prompt) else sample
        spans = [(prompt, True), (rest, False)] if sample.startswith(prompt) else [(sample, False)]
        lines = wrap(spans, inner, max_lines, size)
        text_top = y0 + (box_h - len(lines) * line_h) / 2
        for j, line in enumerate(lines):
            draw_spans(draw, margin + 28, text_top + j * line_h, line, size, INK, bold_fill=(184, 96, 0))
    footer = "huggingtweets · generated text, not the person"
    draw_text(draw, (margin, HEIGHT - 42), footer, font_chain(20), MUTED)
    return img


def loss_curve_image(step_losses: list[float], history: list[dict], best_step: int) -> Image.Image:
    """Training loss per step (line) and held-out loss at each measure (dots; the kept one ringed)."""
    w, h, left, right, top, bottom = 900, 460, 90, 30, 50, 60
    img = Image.new("RGB", (w, h), CARD)
    draw = ImageDraw.Draw(img)
    small, title = font_chain(16), font_chain(20, True)
    draw_text(draw, (left, 14), "Loss (training per step, validation at each measure)", title, INK)
    values = [v for v in step_losses] + [m["validation_loss"] for m in history if m.get("validation_loss") is not None]
    if not values:
        return img
    lo, hi = min(values), max(values)
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)
    n = max(1, len(step_losses))

    def xy(step: float, value: float) -> tuple[float, float]:
        return (left + (w - left - right) * step / n, top + (h - top - bottom) * (hi - value) / (hi - lo))

    for k in range(5):  # horizontal grid with loss labels
        value = lo + (hi - lo) * k / 4
        y = xy(0, value)[1]
        draw.line((left, y, w - right, y), fill=(236, 236, 236))
        draw_text(draw, (12, y - 9), f"{value:.2f}", small, MUTED)
    draw.rectangle((left, top, w - right, h - bottom), outline=(200, 200, 200))
    passes = [m for m in history if float(m["epoch"]).is_integer()]
    for m in passes:  # ends of passes
        x = xy(m["step"], lo)[0]
        draw.line((x, top, x, h - bottom), fill=(226, 226, 226))
        draw_text(draw, (x - 40, h - bottom + 10), f"pass {int(m['epoch'])}", small, MUTED)
    if len(step_losses) > 1:
        draw.line([xy(i + 1, v) for i, v in enumerate(step_losses)], fill=(66, 110, 200), width=2)
    for m in history:
        if m.get("validation_loss") is None:
            continue
        x, y = xy(m["step"], m["validation_loss"])
        draw.ellipse((x - 6, y - 6, x + 6, y + 6), fill=ACCENT)
        if m["step"] == best_step:
            draw.ellipse((x - 11, y - 11, x + 11, y + 11), outline=INK, width=2)
    draw_text(draw, (left, h - 26), "training loss", small, (66, 110, 200))
    draw_text(draw, (left + 140, h - 26), "validation loss (ringed: kept)", small, (200, 120, 0))
    return img


def save_png(img: Image.Image, path: Path) -> Path:
    # No timestamps or other metadata: same image, same bytes. zlib's default level: `optimize=True`
    # makes files 4% smaller for four times the time (85 ms a model).
    img.save(path, format="PNG", compress_level=6)
    return path
