"""Is a key from the settings guessable? Keys made by lmgate are 32 random bytes; keys people
type (`LMGATE_ADMIN_KEY=1`, `GATEWAY_API_KEY=changeme`) often are not, and on a network
listener the damping of bad keys only slows a guesser down. `serve` warns, `doctor` fails.
"""

from __future__ import annotations

import re
from functools import cache
from itertools import pairwise
from pathlib import Path

MIN_LENGTH = 16
MIN_DISTINCT = 8
# Words that passwords and placeholder keys are made of; a key that is nothing but these
# (plus digits or punctuation) is found by any guessing list.
COMMON_WORDS = frozenset(
    """
    access admin administrator api apikey auth bearer change changeme default demo dev
    development dragon gateway god guest hello iloveyou key let letmein llama lm lmgate
    lmstudio local localhost login love master me model monkey my openai pass passw0rd
    passphrase password private prod production public qwerty root secret secure server
    shadow studio sunshine super superman test testing token trust trustno user welcome
    qwerty qwertz azerty qwertyuiop asdf asdfgh asdfghjkl zxcv zxcvbnm uiop hjkl
    """.split()
)
SYSTEM_WORDS = Path("/usr/share/dict/words")
_NOT_LETTERS = re.compile(r"[^a-z]+")


@cache
def _dictionary() -> frozenset[str]:
    """The system's word list when it has one (most Linux and macOS machines)."""
    try:
        text = SYSTEM_WORDS.read_text(errors="ignore")
    except OSError:
        return frozenset()
    return frozenset(w.strip().lower() for w in text.splitlines() if len(w.strip()) >= 4)


def _common_words_only(letters: str) -> bool:
    """Whether `letters` is one or more common words run together (`superSecretPassword`)."""
    reachable = [True] + [False] * len(letters)
    for end in range(1, len(letters) + 1):
        reachable[end] = any(
            reachable[start] and letters[start:end] in COMMON_WORDS for start in range(end)
        )
    return reachable[-1]


def _sequential(key: str) -> bool:
    """Mostly runs like `1234`, `abcd`, `9876` (wrapping `90` counts too): typed, not drawn."""
    steps = [ord(b) - ord(a) for a, b in pairwise(key)]
    runs = sum(step in (1, -1, -9, 9) for step in steps)
    return runs >= 0.7 * len(steps)


def weakness(key: str) -> str | None:
    """Why `key` is easy to guess, or None."""
    if len(key) < MIN_LENGTH:
        return f"it is shorter than {MIN_LENGTH} characters"
    if len(set(key)) < MIN_DISTINCT:
        return f"it has fewer than {MIN_DISTINCT} different characters"
    if _sequential(key):
        return "it is a run of consecutive characters"
    words = [w for w in _NOT_LETTERS.split(key.lower()) if w]
    if words and all(_common_words_only(w) or w in _dictionary() for w in words):
        return "it is made of dictionary words"
    return None
