"""Procedurally generated fictitious facts for the language-model study (``imu-fast bench lm``).

Invented people (names built from syllables, so no pretrained model can know them) each get three
facts: a birthplace (an invented town), a job and the title of a book they wrote. Every fact is a
question/answer pair such as ``"Q: Where was Zorvan Petelik born? A: Quillmere"``; the loss and the
accuracy are taken on the answer tokens only (labels = -100 on the question, see ``encode_fact``).

Everything is a deterministic function of the seed: the same seed gives the same people, facts and
forget split on every machine (``random.Random`` is stable across Python versions for the calls used
here). A second group of people, disjoint in name, is generated the same way and never trained on:
their facts are the non-members of the membership-inference attack.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

IGNORE_INDEX = -100

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t", "th",
           "v", "z", "zh", "qu", "j", "w")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou", "y")
_CODAS = ("", "", "", "n", "r", "l", "s", "k", "th", "m")
_TOWN_ENDINGS = ("mere", "ford", "holm", "wick", "dale", "stead", "haven", "moor", "bury", "thorpe", "crest",
                 "fell", "gate", "mouth", "wold")
JOBS = ("baker", "cartographer", "beekeeper", "glassblower", "clockmaker", "ferry pilot", "lighthouse keeper",
        "bookbinder", "potter", "astronomer", "violin maker", "tailor", "botanist", "blacksmith", "archivist",
        "cheesemaker", "locksmith", "surveyor", "stonemason", "weaver", "chemist", "tea merchant", "harpist",
        "shipwright", "perfumer", "falconer", "printer", "geologist", "puppeteer", "rope maker")
_TITLE_ADJECTIVES = ("Silent", "Crimson", "Hollow", "Distant", "Golden", "Broken", "Hidden", "Wandering",
                     "Frozen", "Burning", "Last", "Forgotten", "Velvet", "Iron", "Paper", "Quiet", "Salt",
                     "Glass", "Winter", "Copper")
_TITLE_NOUNS = ("Orchard", "Lantern", "River", "Harbour", "Garden", "Compass", "Mirror", "Tower", "Meadow",
                "Kingdom", "Letter", "Violin", "Staircase", "Island", "Forest", "Clock", "Bridge", "Feather",
                "Map", "Shadow")

# kind -> question template; the answer is the person's attribute of that kind.
QUESTIONS = {
    "birthplace": "Where was {name} born?",
    "job": "What does {name} do for a living?",
    "book": "Which book did {name} write?",
}
KINDS = tuple(QUESTIONS)


@dataclass(frozen=True)
class Person:
    name: str
    birthplace: str
    job: str
    book: str


@dataclass(frozen=True)
class Fact:
    person: int  # index into its group (trained people or held-out people)
    kind: str  # one of KINDS
    question: str
    answer: str

    @property
    def prompt(self) -> str:
        return f"Q: {self.question} A:"

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.answer}"


@dataclass(frozen=True)
class World:
    people: tuple[Person, ...]  # fine-tuned on
    heldout: tuple[Person, ...]  # never trained on (non-members)
    towns: tuple[str, ...]  # the pool birthplaces are drawn from


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(_syllable(rng) for _ in range(syllables)).capitalize()


def _town(rng: random.Random) -> str:
    return _word(rng, rng.choice((1, 2))) + rng.choice(_TOWN_ENDINGS)


def _unique(make, count: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < count:
        value = make()
        if value not in taken:
            taken.add(value)
            out.append(value)
    return out


def make_world(n_people: int, n_heldout: int, seed: int, n_towns: int = 40) -> World:
    """``n_people`` trained and ``n_heldout`` never-trained invented people, all names distinct."""
    if n_people < 1 or n_heldout < 1:
        raise ValueError(f"need at least one trained and one held-out person, got {n_people} and {n_heldout}")
    rng = random.Random(f"imu-fast lm facts {seed}")
    taken: set[str] = set()
    towns = _unique(lambda: _town(rng), n_towns, taken)
    names = _unique(lambda: f"{_word(rng, rng.choice((2, 2, 3)))} {_word(rng, rng.choice((2, 3)))}",
                    n_people + n_heldout, taken)

    def person(name: str) -> Person:
        book = f"The {rng.choice(_TITLE_ADJECTIVES)} {rng.choice(_TITLE_NOUNS)}"
        return Person(name=name, birthplace=rng.choice(towns), job=rng.choice(JOBS), book=book)

    people = [person(n) for n in names]
    return World(tuple(people[:n_people]), tuple(people[n_people:]), tuple(towns))


def facts_of(people: Sequence[Person], indices: Sequence[int] | None = None) -> list[Fact]:
    """All facts (three per person) of ``people[i]`` for i in ``indices`` (default: everyone), in order."""
    indices = range(len(people)) if indices is None else indices
    return [Fact(i, kind, QUESTIONS[kind].format(name=people[i].name), getattr(people[i], kind))
            for i in indices for kind in KINDS]


def forget_split(n_people: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(forget, retain)`` person indices: a seeded random ``fraction`` of the people (at least one)."""
    if not 0 < fraction < 1:
        raise ValueError(f"forget fraction must be in (0, 1), got {fraction}")
    k = max(1, round(fraction * n_people))
    if k >= n_people:
        raise ValueError(f"forgetting {k} of {n_people} people leaves nobody to retain")
    forget = sorted(random.Random(f"imu-fast lm forget {seed}").sample(range(n_people), k))
    chosen = set(forget)
    return forget, [i for i in range(n_people) if i not in chosen]


# ---------------------------------------------------------------------------------------------
# Tokenisation


class Codec(Protocol):
    """What the study needs from a tokenizer."""

    pad_id: int

    def encode(self, text: str) -> list[int]: ...


class HFCodec:
    """A Hugging Face tokenizer, used without special tokens (SmolLM2 adds none by default anyway)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad token nor an end-of-sequence token to pad with")
        self.pad_id = int(pad)
        self.vocab_size = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class CharCodec:
    """A character-level tokenizer over a fixed alphabet: id 0 pads, id 1 is any unknown character."""

    pad_id = 0
    unk_id = 1

    def __init__(self, texts: Sequence[str]):
        alphabet = sorted({c for text in texts for c in text})
        self.index = {c: i + 2 for i, c in enumerate(alphabet)}
        self.vocab_size = len(alphabet) + 2

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, self.unk_id) for c in text]


def encode_fact(codec: Codec, fact: Fact) -> tuple[list[int], int]:
    """``(ids, n_prompt)``: the prompt and the answer are encoded separately and joined, so the
    answer's tokens are exactly ``ids[n_prompt:]`` (no token straddles the boundary)."""
    prompt = codec.encode(fact.prompt)
    answer = codec.encode(" " + fact.answer)
    if not prompt or not answer:
        raise ValueError(f"the tokenizer gave an empty prompt or answer for {fact.text!r}")
    return prompt + answer, len(prompt)


def encode_facts(codec: Codec, facts: Sequence[Fact], length: int | None = None) -> list[dict]:
    """One sample dict per fact, right-padded to ``length`` (default: the longest fact).

    ``input_ids`` and ``attention_mask`` as a causal LM takes them; ``labels`` = the input ids on
    the answer tokens and -100 on the question and the padding, so the loss (``imu_fast.lm.
    causal_lm_losses``, which shifts labels inside) covers the answer only.
    """
    encoded = [encode_fact(codec, f) for f in facts]
    longest = max(len(ids) for ids, _ in encoded)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"a fact has {longest} tokens, more than the padded length {length}")
    samples = []
    for ids, n_prompt in encoded:
        pad = length - len(ids)
        input_ids = torch.tensor(ids + [codec.pad_id] * pad)
        mask = torch.tensor([1] * len(ids) + [0] * pad)
        labels = torch.tensor([IGNORE_INDEX] * n_prompt + ids[n_prompt:] + [IGNORE_INDEX] * pad)
        samples.append({"input_ids": input_ids, "attention_mask": mask, "labels": labels})
    return samples


def fact_length(codec: Codec, facts: Sequence[Fact]) -> int:
    return max(len(encode_fact(codec, f)[0]) for f in facts)


def general_text(part: str = "eval") -> str:
    """General English the facts never touch: CPython's ``pydoc_data.topics`` (the help() topics).

    The topics, sorted by key, are split in two disjoint halves: ``"eval"`` (odd positions, ~30k
    words), on which perplexity is measured, and ``"replay"`` (even positions, ~36k words), mixed into
    fine-tuning so that learning the facts does not wreck the model's general language modelling.
    ``"all"`` is everything.
    """
    from pydoc_data.topics import topics

    keys = sorted(topics)
    chosen = {"eval": keys[1::2], "replay": keys[0::2], "all": keys}
    if part not in chosen:
        raise ValueError(f"part must be one of {sorted(chosen)}, got {part!r}")
    return "\n\n".join(topics[k] for k in chosen[part])


def text_chunks(codec: Codec, n_chunks: int, chunk_len: int, text: str | None = None) -> torch.Tensor:
    """``(n_chunks, chunk_len)`` token ids: evenly spaced, non-overlapping windows of the text
    (default: the evaluation half of ``general_text``)."""
    ids = codec.encode(general_text("eval") if text is None else text)
    if len(ids) < n_chunks * chunk_len:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than {n_chunks} x {chunk_len}")
    stride = len(ids) // n_chunks
    return torch.tensor([ids[i * stride:i * stride + chunk_len] for i in range(n_chunks)])


def token_windows(codec: Codec, text: str, length: int) -> torch.Tensor:
    """``(n, length)``: the text's token ids cut into consecutive non-overlapping windows (the tail is dropped)."""
    ids = codec.encode(text)
    n = len(ids) // length
    if n == 0:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than one window of {length}")
    return torch.tensor(ids[:n * length]).view(n, length)
