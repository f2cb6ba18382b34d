"""A small, fixed English corpus used to learn the local tokenizer vocabularies.

The words are the ones that show up in image captions, text-to-image prompts and the
refiner's instructions, so that the tiny models' tokenizers split such text into whole
words and random generations decode to readable (if meaningless) word salad.

Everything here is a pure function of the constants below: no randomness, no I/O.
"""

from __future__ import annotations

from functools import lru_cache

# fmt: off
COLOURS = (
    "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white",
    "grey", "gray", "golden", "silver", "beige", "teal", "dark", "light", "bright", "pale",
)
SUBJECTS = (
    "dog", "cat", "puppy", "kitten", "horse", "bird", "man", "woman", "child", "boy", "girl",
    "person", "people", "car", "bus", "truck", "bicycle", "train", "boat", "plane", "tree",
    "flower", "house", "building", "mountain", "river", "lake", "beach", "sky", "cloud", "city",
    "street", "table", "chair", "couch", "bed", "window", "door", "lamp", "cup", "plate", "pizza",
    "cake", "apple", "banana", "sandwich", "phone", "laptop", "book", "clock", "umbrella", "kite",
    "ball", "bench", "sign", "fence", "field", "grass", "road", "sea", "wave", "snow", "sun",
    "astronaut", "robot", "castle", "bridge", "forest", "garden", "kitchen", "room", "shirt",
    "hat", "dress", "jacket", "shoes", "bag", "giraffe", "elephant", "zebra", "sheep", "cow",
)
ADJECTIVES = (
    "small", "large", "big", "tiny", "old", "young", "new", "wooden", "metal", "plastic", "glass",
    "round", "square", "tall", "short", "long", "wet", "dry", "sunny", "cloudy", "rainy", "snowy",
    "busy", "empty", "crowded", "quiet", "happy", "sleepy", "fluffy", "shiny", "striped", "spotted",
    "colorful", "colourful", "blurry", "sharp", "detailed", "realistic", "vintage", "modern",
)
RELATIONS = (
    "on", "in", "under", "next to", "near", "behind", "in front of", "above", "below", "beside",
    "with", "without", "at", "by", "across", "inside", "outside", "between", "around", "over",
)
ACTIONS = (
    "sitting", "standing", "lying", "running", "walking", "jumping", "flying", "eating",
    "drinking", "holding", "playing", "riding", "looking", "smiling", "sleeping", "swimming",
    "parked", "covered", "filled", "painted", "reading", "wearing", "carrying", "waiting",
)
STYLES = (
    "a photo of", "a picture of", "an image of", "a painting of", "a drawing of", "a close up of",
    "a black and white photo of", "a blurry photo of", "a cartoon of", "a rendering of",
    "a digital art of", "an oil painting of", "a sketch of", "a watercolor of",
)
SCENES = (
    "during the day", "at night", "at sunset", "in the morning", "in the rain", "in the snow",
    "in the background", "in the foreground", "on a sunny day", "in a park", "in a room",
    "on the left", "on the right", "in the center", "at the top", "at the bottom",
)
# fmt: on
# Words the refiner / captioner prompts are made of.
INSTRUCTIONS = (
    "Describe the image in one sentence.",
    "Describe the differences between the generated image and the target image.",
    "Compare the two images and list the differences in colour, shape, size, position and style.",
    "You are an assistant that helps a user find an image they have in mind.",
    "Rewrite the prompt so that the generated image looks more like the target image.",
    "Keep what is correct, fix what is wrong, and answer with the new prompt only.",
    "Generated image: Target image: Previous prompt: New prompt: Differences: Answer:",
    "The user is thinking of a specific picture. Ask a question about the missing details.",
    "Focus on objects, colors, background, lighting, composition, count and texture.",
    "Do not mention that this is a generated image. Be concise and specific.",
    "Question: what is in the picture? Answer: there is a dog and a cat.",
    "System: user: model: assistant: hello, world! thank you. yes, no, maybe.",
    "The first image shows one thing, the second image shows another thing.",
    "More, less, larger, smaller, brighter, darker, higher, lower, left, right, top, bottom.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 100 two three four five many several some all none.",
    "It's a nice day; isn't it? I'm sure we'll see what they've done - and that's it.",
    "The quick brown fox jumps over the lazy dog.",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    """Deterministic caption-like sentences plus the fixed instruction lines."""
    out: list[str] = []
    n_col, n_adj, n_act, n_rel = len(COLOURS), len(ADJECTIVES), len(ACTIONS), len(RELATIONS)
    n_sty, n_sce = len(STYLES), len(SCENES)
    for i, subject in enumerate(SUBJECTS):
        other = SUBJECTS[(7 * i + 3) % len(SUBJECTS)]
        colour = COLOURS[i % n_col]
        adj = ADJECTIVES[(3 * i) % n_adj]
        action = ACTIONS[(5 * i) % n_act]
        relation = RELATIONS[(11 * i) % n_rel]
        style = STYLES[i % n_sty]
        scene = SCENES[(13 * i) % n_sce]
        out.append(
            f"{style} {_article(adj)} {adj} {subject} {action} {relation} {_article(colour)} {colour} {other} {scene}."
        )
        out.append(f"{_article(colour).capitalize()} {colour} {subject} and {_article(other)} {other}.")
        out.append(f"There are two {subject}s {action} {relation} the {COLOURS[(i + 5) % n_col]} {other}.")
    for j, colour in enumerate(COLOURS):
        out.append(f"The {colour} one is {ADJECTIVES[j % n_adj]} and {ADJECTIVES[(j + 9) % n_adj]}.")
    out.extend(INSTRUCTIONS)
    # Repeat the instruction lines so that their words win the frequent merges.
    out.extend(INSTRUCTIONS * 2)
    return tuple(out)


@lru_cache(maxsize=1)
def words() -> tuple[str, ...]:
    """All whitespace-separated lowercase words of the corpus (with repetitions)."""
    return tuple(w for s in sentences() for w in s.lower().split())
