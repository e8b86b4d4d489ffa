"""The held-out prompts stay held out: no training prompt, hand-written or built from templates, gives them away.

Every tau figure is measured on the held-out split, so a held-out prompt whose text the heads have trained on
(copied into a training prompt, or produced by a template) would flatter them. Word 8-grams catch a shared
passage even when the instruction around it differs.
"""

import string

import pytest

from medusa_lib import data

N = 8  # word n-gram length
MAX_SHARED = 0.20  # at most this share of a held-out prompt's 8-grams may also occur in a training prompt
# How many template prompts the shipped heads train on (scripts/generate_data.py --templates default). The
# template prompts are a prefix-stable sequence (same seed, larger n: the smaller n comes first), so this
# covers every smaller set as well; it takes about a second.
TEMPLATE_PROMPTS = 16384
COPY_PROMPTS = 512  # data.copy_prompts answered in data/selfdistill-copy
# Known leaks, older than this test and left as they are: held-out prompts allowed above MAX_SHARED, each up to
# the share measured when it was written (so it cannot grow unnoticed), and why. All three come from the
# templates (the hand-written train prompts stay below 20%); removing the filler would change the template
# prompts, and with them the committed answers in data/selfdistill.
ALLOWED: dict[str, tuple[float, str]] = {
    "math-004": (0.556, 'the math template "A rectangle is {a} cm long and {b} cm wide. What are its area and '
                        'perimeter?": the same question, other numbers'),
    "code-020": (0.625, 'the code task "removes duplicates from a list while keeping order" (e.g. tmpl-04417)'),
    "translation-016": (0.334, 'the sentence "Please close the window, it is cold." is a translation filler: '
                               "tmpl-05100 asks for it in Spanish too"),
}


def ngrams(text: str, n: int = N) -> set[tuple[str, ...]]:
    """The word n-grams of `text`: lower-cased, split on whitespace, punctuation stripped from word ends."""
    words = [w.strip(string.punctuation) for w in text.lower().split()]
    words = [w for w in words if w]  # a lone "-" or "```" is no word
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@pytest.fixture(scope="module")
def shared_share() -> dict[str, float]:
    """Per held-out prompt id: the share of its 8-grams that also occur in some training or template prompt."""
    held = {p.id: ngrams(p.prompt) for p in data.load_prompts("heldout")}
    wanted = set().union(*held.values())
    training = [p.prompt for p in data.load_prompts("train")]
    training += [p.prompt for p in data.template_prompts(TEMPLATE_PROMPTS)]
    training += [p.prompt for p in data.copy_prompts(COPY_PROMPTS)]
    seen = set()
    for text in training:
        seen |= ngrams(text) & wanted
    return {i: len(g & seen) / len(g) if g else 0.0 for i, g in held.items()}


def test_heldout_prompts_do_not_leak_into_training_prompts(shared_share):
    limit = {i: ALLOWED[i][0] if i in ALLOWED else MAX_SHARED for i in shared_share}
    offenders = {i: round(s, 3) for i, s in shared_share.items() if s > limit[i]}
    assert not offenders, (f"held-out prompts sharing more of their {N}-grams with training prompts than allowed "
                           f"({MAX_SHARED:.0%} unless in ALLOWED): {offenders}")
    stale = set(ALLOWED) - set(shared_share)
    assert not stale, f"ALLOWED names prompts that are not held out: {stale}"


@pytest.mark.parametrize("category", ["documents", "code_edit"])
def test_copy_heavy_categories_are_held_out_with_long_prompts(category):
    held = data.load_prompts("heldout", categories=[category])
    assert len(held) >= 4, f"{category}: {len(held)} held-out prompts"
    short = {p.id: len(p.prompt) for p in held if len(p.prompt) < 600}
    assert not short, f"{category}: prompts under 600 characters: {short}"
