"""Built-in synthetic tasks: generated offline from a seed, with exact answers, few-shot capable.

A task name is a family and its integer parameters, e.g. `addition_3` (3-digit addition) or
`sparse_parity_8_3` (parity of 3 hidden positions of 8 bits); `get_task(name)` builds it and
an unknown name is an error listing the families.

    family                 name (defaults)               prompt -> answer
    copy                   copy_8                        "fbadkcjp|" -> "fbadkcjp"
    associative recall     recall_4                      "a:3,k:7,c:1,m:9;c=" -> "1"
    addition               addition_3                    "123+458=" -> "581"
    addition, reversed     addition_rev_3                "321+854=" -> "185" (digits least significant first)
    modular arithmetic     modular_23                    "17*5%23=" -> "16"  (+, -, * mod p)
    modified arithmetic    modified_arithmetic_2         three demos of a hidden rule, then a query:
                                                         "12@30=43\\n5@61=67\\n40@2=43\\n7@11=" -> "19" (a+b+1)
    sparse parity          sparse_parity_8_3             "01101001>" -> "1" (parity of 3 fixed hidden bits;
                                                         multiple choice between "0" and "1")
    sort                   sort_5                        "Q: dbgai\nA: " -> "abdgi" (distinct letters of a-j;
                                                         the property experiments/dpo_sorted.py rewards)

Every example ends with "\\n" (the stop string). Example i of a stream depends only on
(seed, task, stream, i), so examples do not change when more are asked for. Streams: eval
examples, few-shot demonstrations (drawn from their own stream, never from the eval
examples) and the training corpus (`corpus`, used by data.source="tasks").

Kept free of lm imports above numpy: the data layer builds its training text from here.
"""

from __future__ import annotations

import dataclasses
import re
import zlib

import numpy as np

STOP = "\n"
CORPUS_VERSION = 1  # bump when generated text changes: data stores are keyed by it
STREAMS = {"eval": 0, "fewshot": 1, "train": 2, "valid": 3}
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclasses.dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    choices: tuple = ()  # multiple choice: the candidate answers (answer is one of them)

    @property
    def gold(self) -> int:
        return self.choices.index(self.answer)


def _rev(s: str) -> str:
    return s[::-1]


def _number(rng, digits: int) -> int:
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    return int(rng.integers(lo, 10 ** digits))


# ----------------------------------------------------------------------------- families
# Each family: (parameter names, defaults, checks, example(rng, *params) -> Example).

def _copy(rng, n):
    s = "".join(rng.choice(list(LETTERS[:16]), n))
    return Example(s + "|", s)


def _recall(rng, k):
    keys = rng.choice(list(LETTERS), k, replace=False)
    values = rng.integers(0, 10, k)
    q = int(rng.integers(0, k))
    pairs = ",".join(f"{a}:{v}" for a, v in zip(keys, values))
    return Example(f"{pairs};{keys[q]}=", str(values[q]))


def _addition(rng, n):
    a, b = _number(rng, n), _number(rng, n)
    return Example(f"{a}+{b}=", str(a + b))


def _addition_rev(rng, n):
    a, b = _number(rng, n), _number(rng, n)
    return Example(f"{_rev(str(a))}+{_rev(str(b))}=", _rev(str(a + b)))


def _modular(rng, p):
    a, b = int(rng.integers(0, p)), int(rng.integers(0, p))
    op = "+-*"[int(rng.integers(0, 3))]
    value = {"+": a + b, "-": a - b, "*": a * b}[op] % p
    return Example(f"{a}{op}{b}%{p}=", str(value))


RULES = (lambda a, b: a + b + 1, lambda a, b: a + b - 1, lambda a, b: a - b + 1,
         lambda a, b: a + 2 * b, lambda a, b: 2 * a + b)


def _modified_arithmetic(rng, n, demos=3):
    rule = RULES[int(rng.integers(0, len(RULES)))]
    pairs = [(_number(rng, n), _number(rng, n)) for _ in range(demos + 1)]
    shown = "".join(f"{a}@{b}={rule(a, b)}\n" for a, b in pairs[:-1])
    a, b = pairs[-1]
    return Example(f"{shown}{a}@{b}=", str(rule(a, b)))


def _sparse_parity(rng, n, k, hidden):
    bits = rng.integers(0, 2, n)
    return Example("".join(map(str, bits)) + ">", str(int(bits[list(hidden)].sum() % 2)), ("0", "1"))


SORT_ALPHABET = "abcdefghij"


def _sort(rng, n):
    word = "".join(SORT_ALPHABET[i] for i in rng.choice(len(SORT_ALPHABET), n, replace=False))
    return Example(f"Q: {word}\nA: ", "".join(sorted(word)))


FAMILIES = {
    # name: (parameter names, defaults, (min values), example function)
    "copy": (("length",), (8,), (1,), _copy),
    "recall": (("pairs",), (4,), (1,), _recall),
    "addition": (("digits",), (3,), (1,), _addition),
    "addition_rev": (("digits",), (3,), (1,), _addition_rev),
    "modular": (("modulus",), (23,), (2,), _modular),
    "modified_arithmetic": (("digits", "demos"), (2, 3), (1, 1), _modified_arithmetic),
    "sparse_parity": (("bits", "relevant"), (8, 3), (1, 1), _sparse_parity),
    "sort": (("letters",), (5,), (2,), _sort),
}
LIMITS = {"recall": (26,), "sort": (len(SORT_ALPHABET),)}  # distinct letters
# Well-formed answers, right or wrong (the sampled_valid metric): family -> check(example, text).
VALID = {"sort": lambda ex, text: sorted(text.strip()) == sorted(ex.answer)}  # a permutation


class Task:
    """One named synthetic task: examples from a seed, few-shot prompts, the pass metric."""

    def __init__(self, name: str, family: str, params: tuple):
        self.name, self.family, self.params = name, family, params
        fn = FAMILIES[family][3]
        if family == "sparse_parity":
            n, k = params
            hidden = tuple(sorted(np.random.default_rng(zlib.crc32(name.encode())).choice(n, k, replace=False)))
            self.hidden = hidden
            self._make = lambda rng: fn(rng, n, k, hidden)
        else:
            self._make = lambda rng: fn(rng, *params)
        self.multiple_choice = bool(self._make(np.random.default_rng(0)).choices)
        self.pass_metric = "accuracy" if self.multiple_choice else "exact_match"
        self.valid = VALID.get(family)  # None: the family has no notion of a well-formed answer

    def __repr__(self):
        return f"Task({self.name!r})"

    def example(self, i: int, seed: int, stream: str = "eval") -> Example:
        return self._make(np.random.default_rng([int(seed), zlib.crc32(self.name.encode()), STREAMS[stream], int(i)]))

    def examples(self, n: int, seed: int = 0, stream: str = "eval") -> list[Example]:
        return [self.example(i, seed, stream) for i in range(int(n))]

    def fewshot(self, i: int, example: Example, k: int, seed: int = 0) -> Example:
        """`example` with k solved demonstrations (from the few-shot stream) before its prompt."""
        shots = [self.example(i * k + j, seed, "fewshot") for j in range(k)]
        prefix = "".join(s.prompt + s.answer + STOP for s in shots)
        return dataclasses.replace(example, prompt=prefix + example.prompt)

    def eval_set(self, n: int, *, num_fewshot: int = 0, seed: int = 0) -> list[Example]:
        return [self.fewshot(i, ex, num_fewshot, seed) if num_fewshot else ex
                for i, ex in enumerate(self.examples(n, seed, "eval"))]


# ----------------------------------------------------------------------------- registry

def known_tasks() -> list[str]:
    """The families with their default parameters, as names (what an error lists)."""
    out = []
    for family, (names, defaults, _, _) in FAMILIES.items():
        out.append(family + "".join(f"_{d}" for d in defaults))
    return out


def _help() -> str:
    parts = [f"{f}_<{'>_<'.join(p[0])}>" for f, p in FAMILIES.items()]
    return f"known tasks: {', '.join(parts)} (e.g. {', '.join(known_tasks())})"


def get_task(name: str) -> Task:
    """The task a name stands for, e.g. 'addition_3', 'addition_rev_5', 'sparse_parity_16_4'."""
    m = re.fullmatch(r"([a-z]+(?:_[a-z]+)*)((?:_\d+)*)", str(name).strip())
    family = m.group(1) if m else None
    if family not in FAMILIES:
        raise ValueError(f"unknown task {name!r}; {_help()}")
    names, defaults, minimum, _ = FAMILIES[family]
    given = tuple(int(x) for x in m.group(2).split("_")[1:])
    if len(given) > len(names):
        raise ValueError(f"task {name!r}: {family} takes at most {len(names)} parameter(s) "
                         f"({', '.join(names)}); {_help()}")
    params = given + defaults[len(given):]
    for p, value, lo in zip(names, params, minimum):
        if value < lo:
            raise ValueError(f"task {name!r}: {p}={value} must be >= {lo}")
    for p, value, hi in zip(names, params, LIMITS.get(family, ())):
        if value > hi:
            raise ValueError(f"task {name!r}: {p}={value} must be <= {hi}")
    if family == "sparse_parity" and params[1] > params[0]:
        raise ValueError(f"task {name!r}: relevant={params[1]} bits cannot exceed bits={params[0]}")
    canonical = family + "".join(f"_{v}" for v in params)
    return Task(canonical, family, params)  # one name per task: metric keys and seeds agree


def parse_tasks(value) -> list[str]:
    """'a,b' or ('a', 'b') -> ['a', 'b'] (empty entries dropped), each checked by get_task."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    names = [str(x).strip() for x in items if str(x).strip()]
    for n in names:
        get_task(n)
    return names


# ----------------------------------------------------------------------------- training text

def corpus(names, num_chars: int, *, seed: int = 0, split: str = "train",
           per_document: int = 16) -> list[str]:
    """Documents of `per_document` solved examples of one task each ("prompt answer\\n"...),
    tasks drawn uniformly from `names`, until about num_chars characters (the few-shot format
    of the evals, from streams of their own: never the eval or few-shot examples)."""
    tasks = [get_task(n) for n in parse_tasks(names)]
    if not tasks:
        raise ValueError("a task corpus needs at least one task name")
    if num_chars < 1:
        raise ValueError(f"a task corpus needs num_chars >= 1, got {num_chars}")
    rng = np.random.default_rng([int(seed), STREAMS[split]])
    docs, size, counts = [], 0, [0] * len(tasks)
    while size < num_chars:
        t = int(rng.integers(0, len(tasks)))
        start = counts[t]
        counts[t] += per_document
        doc = "".join(e.prompt + e.answer + STOP for e in
                      (tasks[t].example(start + j, seed, split) for j in range(per_document)))
        docs.append(doc)
        size += len(doc)
    return docs
