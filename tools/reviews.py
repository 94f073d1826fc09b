#!/usr/bin/python3
"""Generated product reviews in two domains, for sentiment transfer with tlab's text dataset and
a BERT-style tokenizer: books and kitchen appliances (the domains of Blitzer et al. 2007's
multi-domain sentiment data, which Debian does not ship), each review a label<TAB>text line.

Each domain has its own topic words and its own sentiment words ("gripping", "predictable" for
books; "sturdy", "flimsy" for kitchen), and the two share general ones ("great", "awful"); a
review's label is the sign of its sentiment words' polarity, a negation ("not", "never") before
a word flipping it, and 10% of the labels are flipped (noise). A review's phrases mostly agree
with the reviewer's opinion, so a domain's own sentiment words keep company with the shared ones:
unlabelled text says what they mean, which masked-language-model pre-training can learn. So a model pre-trained on books
knows the shared words and the negation rule, not the kitchen's own words: transfer helps, and
only partly. Also writes vocab.txt, a WordPiece vocabulary ([PAD] [UNK] [CLS] [SEP] [MASK],
punctuation, the words, and pieces such that some words split: "unpredictable" -> un
##predict ##able).

    /usr/bin/python3 tools/reviews.py [OUT_DIR]     (default results/datasets/reviews)

Files: books.tsv (2,000 reviews), books_test.tsv (500), kitchen.tsv (2,000), kitchen_test.tsv
(500), vocab.txt, and vectors.txt: 50-dimensional word vectors in GloVe's text format standing
for vectors pre-trained on a large corpus (generated: polarity along one direction for the
sentiment words of both domains, noise elsewhere; no downloads here). Seeded: the same files
on every machine.
"""
import os
import random
import sys

SHARED_POS = ["great", "good", "excellent", "wonderful", "love", "perfect", "best", "nice"]
SHARED_NEG = ["awful", "bad", "terrible", "poor", "hate", "worst", "disappointing", "waste"]
DOMAINS = {
    "books": {
        "topic": ["book", "novel", "story", "plot", "author", "chapter", "characters", "ending",
                  "writing", "read", "pages", "series", "prose", "reader"],
        "pos": ["gripping", "moving", "insightful", "captivating", "brilliant", "engaging"],
        "neg": ["predictable", "unpredictable", "dull", "shallow", "tedious", "confusing"],
    },
    "kitchen": {
        "topic": ["blender", "knife", "pan", "kettle", "toaster", "lid", "handle", "motor",
                  "coffee", "dishwasher", "steel", "counter", "blade", "pot"],
        "pos": ["sturdy", "sharp", "durable", "reliable", "powerful", "easy"],
        "neg": ["flimsy", "leaks", "broke", "rusty", "noisy", "unreliable"],
    },
}
# Words that are not polarised: the rest of a sentence.
FILLER = ["the", "this", "it", "a", "was", "is", "and", "but", "very", "really", "quite", "i",
          "my", "for", "with", "after", "two", "weeks", "so", "too", "just", "again"]
NEGATIONS = ["not", "never"]
# Word pieces: words listed here are left out of the vocabulary as wholes and split.
PIECES = {"unpredictable": ["un", "##predict", "##able"],
          "unreliable": ["un", "##reli", "##able"],
          "captivating": ["captiv", "##ating"],
          "disappointing": ["disappoint", "##ing"],
          "dishwasher": ["dish", "##washer"]}


def review(rng, domain):
    d = DOMAINS[domain]
    pos = SHARED_POS + d["pos"]
    neg = SHARED_NEG + d["neg"]
    # The reviewer's opinion: most phrases agree with it (as in real reviews, where "sturdy"
    # keeps company with "great"), some do not.
    opinion = 1 if rng.random() < 0.5 else -1
    words, score = [], 0
    for _ in range(rng.randint(2, 3)):  # sentiment phrases
        polarity = opinion if rng.random() < 0.8 else -opinion
        negated = rng.random() < 0.2
        good = (polarity > 0) != negated  # "not bad" is positive
        word = rng.choice(pos if good else neg)
        score += polarity
        words.append(([rng.choice(NEGATIONS)] if negated else []) + [word])
    if score == 0:  # an even split: one more phrase decides
        good = rng.random() < 0.5
        words.append([rng.choice(pos if good else neg)])
        score += 1 if good else -1
    parts = [[rng.choice(d["topic"])] for _ in range(rng.randint(2, 4))]
    parts += [[rng.choice(FILLER)] for _ in range(rng.randint(3, 6))]
    parts += words
    rng.shuffle(parts)
    text = " ".join(w for p in parts for w in p)
    text = text[0].upper() + text[1:] + rng.choice([".", "!", "."])
    label = "pos" if score > 0 else "neg"
    if rng.random() < 0.1:
        label = "neg" if label == "pos" else "pos"
    return label, text


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "results/datasets/reviews"
    os.makedirs(out, exist_ok=True)
    for k, domain in enumerate(DOMAINS):
        for name, count, seed in ((domain, 2000, 10 + k), (domain + "_test", 500, 20 + k)):
            rng = random.Random(seed)
            with open(os.path.join(out, name + ".tsv"), "w", encoding="utf-8") as f:
                for _ in range(count):
                    label, text = review(rng, domain)
                    f.write(label + "\t" + text + "\n")
    words = set(SHARED_POS + SHARED_NEG + FILLER + NEGATIONS)
    for d in DOMAINS.values():
        words.update(d["topic"] + d["pos"] + d["neg"])
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "!", ","]
    pieces = sorted({p for split in PIECES.values() for p in split})
    tokens += sorted(w for w in words if w not in PIECES) + pieces
    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    # Word vectors as a large general corpus would give them (GloVe's text format, 50
    # dimensions): a sentiment direction (+ for positive words of both domains, - for negative),
    # a topic direction, and noise; "not" and "never" and the filler words carry no sentiment.
    # Not every word has one (the word pieces and two rare words), as with real vectors.
    rng = random.Random(7)
    dim = 50
    sentiment = [rng.gauss(0, 1) for _ in range(dim)]
    norm = sum(x * x for x in sentiment) ** 0.5
    sentiment = [x / norm for x in sentiment]
    lines = []
    for w in sorted(words):
        if w in ("counter", "prose"):
            continue
        polarity = 0.0
        for d in DOMAINS.values():
            polarity += (w in d["pos"]) - (w in d["neg"])
        polarity += (w in SHARED_POS) - (w in SHARED_NEG)
        v = [rng.gauss(0, 0.3) + 1.5 * polarity * sentiment[i] for i in range(dim)]
        lines.append(w + " " + " ".join(f"{x:.5f}" for x in v))
    with open(os.path.join(out, "vectors.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{out}: books and kitchen reviews (2000 + 500 each), vocab.txt of {len(tokens)} "
          f"tokens, vectors.txt of {len(lines)} words")


if __name__ == "__main__":
    main()
