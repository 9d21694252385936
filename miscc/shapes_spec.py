"""The `shapes` data's language (shared/reference/shapes_spec.md): shapes, colours, positions, caption templates,
and `parse_caption`, which recovers what a caption asks for. `tools.make_shapes` draws the data from it; the shapes
classifier and the attribute metrics of `eval` read captions with it."""
from __future__ import annotations

import re

from miscc.text import tokenize_caption

SHAPES = ("circle", "square", "triangle")
COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (240, 210, 40), "purple": (140, 60, 190), "orange": (245, 130, 30),
}
SIZES = ("small", "large")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
CAPTIONS_PER_IMAGE = 10
N_CLASSES = len(SHAPES) * len(COLORS)

# Caption wording. Every word a caption can use appears below (see `caption_lexicon`).
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
BACKGROUND_WORDS = {"white": ("white",), "black": ("black",), "gray": ("gray", "grey")}
POSITION_PHRASES = {
    "top left": ("in the top left corner", "in the upper left corner", "at the top left"),
    "top": ("at the top", "near the top"),
    "top right": ("in the top right corner", "in the upper right corner", "at the top right"),
    "left": ("on the left", "on the left side"),
    "center": ("in the middle", "in the center", "at the center"),
    "right": ("on the right", "on the right side"),
    "bottom left": ("in the bottom left corner", "in the lower left corner", "at the bottom left"),
    "bottom": ("at the bottom", "near the bottom"),
    "bottom right": ("in the bottom right corner", "in the lower right corner", "at the bottom right"),
}
LEADS = ("this image shows", "the picture shows", "an image of", "a picture of")
# Templates naming positions: (first clause, later clauses), joined by " and ". {np} = "a big red circle",
# {np_def} = "the big red circle", {pos} = a position phrase, {lead} = one of LEADS.
POSITION_TEMPLATES = (
    ("{np} {pos}", "{np} {pos}"),
    ("there is {np} {pos}", "{np} {pos}"),
    ("{pos} there is {np}", "{pos} there is {np}"),
    ("{np_def} is {pos}", "{np_def} is {pos}"),
    ("{pos} is {np}", "{pos} is {np}"),
    ("{lead} {np} {pos}", "{np} {pos}"),
    ("you can see {np} {pos}", "{np} {pos}"),
)
PLAIN_TEMPLATES = (  # no positions
    ("{np}", "{np}"),
    ("there is {np}", "{np}"),
    ("{lead} {np}", "{np}"),
)
CAPTIONS_WITHOUT_POSITION = 2  # of CAPTIONS_PER_IMAGE; the other 8 name every object's position
P_SIZE_WORD = 0.5  # per object and caption
P_BACKGROUND = 0.4  # per caption

EXAMPLE_CAPTIONS = (
    "a big red square in the top left corner",
    "a small blue circle on the right and a large yellow triangle at the bottom",
    "there is a green triangle in the middle of a black background",
    "a little purple circle at the top left and an orange square in the bottom right corner",
    "the large blue triangle is on the left and the background is white",
    "on a gray background there is a small yellow square at the top",
    "a red circle in the center",
    "in the lower right corner there is a big green circle and at the top there is a purple triangle",
)

_VERTICAL = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
_HORIZONTAL = {"left": "left", "right": "right"}
_CENTER = {"middle", "center", "centre"}
_SIZE_OF_WORD = {w: size for size, words in SIZE_WORDS.items() for w in words}


def class_id(shape: str, color: str) -> int:
    """1-based class id of a (shape, colour) pair: shape_index * 6 + color_index + 1."""
    return SHAPES.index(shape) * len(COLORS) + list(COLORS).index(color) + 1


def parse_caption(text: str, with_size: bool = False) -> list[dict]:
    """The objects a caption describes, in order of mention: `[{"shape", "color", "position"}, ...]`.

    Works on this generator's captions and on free text in the same style. Clauses are split at "and"; an object is
    a shape word, its colour the word before it (None if that is not a colour). A clause holding exactly one object
    gives it the clause's position (vertical top/upper/bottom/lower plus left/right, or middle/center), else None.
    With `with_size`, each dict also has "size" ("small", "large" or None).
    """
    tokens = tokenize_caption(text)
    clauses, current = [], []
    for tok in tokens:
        if tok == "and":
            clauses.append(current)
            current = []
        else:
            current.append(tok)
    clauses.append(current)

    objects = []
    for clause in clauses:
        found = []
        for i, tok in enumerate(clause):
            if tok not in SHAPES:
                continue
            color = clause[i - 1] if i >= 1 and clause[i - 1] in COLORS else None
            j = i - 2 if color is not None else i - 1
            size = _SIZE_OF_WORD.get(clause[j]) if j >= 0 else None
            obj = {"shape": tok, "color": color, "position": None}
            if with_size:
                obj["size"] = size
            found.append(obj)
        if len(found) == 1:
            found[0]["position"] = _clause_position(clause)
        objects.extend(found)
    return objects


def _clause_position(tokens: list[str]) -> str | None:
    """The grid position named by a clause's first vertical/horizontal/centre words, or None."""
    vertical = next((_VERTICAL[t] for t in tokens if t in _VERTICAL), None)
    horizontal = next((_HORIZONTAL[t] for t in tokens if t in _HORIZONTAL), None)
    if vertical and horizontal:
        return f"{vertical} {horizontal}"
    if vertical or horizontal:
        return vertical or horizontal
    return "center" if any(t in _CENTER for t in tokens) else None


def max_caption_words(max_objects: int = 2) -> int:
    """The most words a generated caption can have (`tools.make_shapes`: every template filled with its longest
    phrases, a size word on every object, the longest background form). A config's TEXT.WORDS_NUM below this makes
    the dataset drop random words from the longest captions (AttnGAN's rule), colours and positions included."""
    longest = {"np": 4, "np_def": 4, "pos": max(len(p.split()) for ps in POSITION_PHRASES.values() for p in ps),
               "lead": max(len(x.split()) for x in LEADS)}

    def words(template: str) -> int:
        return len(re.sub(r"\{\w+\}", "", template).split()) + sum(
            longest[k] for k in re.findall(r"\{(\w+)\}", template))

    text = max(words(first) + (max_objects - 1) * (1 + words(rest)) for first, rest in
               POSITION_TEMPLATES + PLAIN_TEMPLATES)
    return text + len("and the background is".split()) + 1


def caption_lexicon() -> set[str]:
    """Every word a generated caption or an example caption can contain."""
    pieces = [*SHAPES, *COLORS, "a an the and on of background is", *LEADS]
    pieces += [w for words in SIZE_WORDS.values() for w in words]
    pieces += [w for words in BACKGROUND_WORDS.values() for w in words]
    pieces += [p for phrases in POSITION_PHRASES.values() for p in phrases]
    for first, rest in POSITION_TEMPLATES + PLAIN_TEMPLATES:
        pieces += [re.sub(r"\{\w+\}", " ", first), re.sub(r"\{\w+\}", " ", rest)]
    return {w for p in pieces for w in p.split()}
