#!/usr/bin/python3
"""The peer of tools/bench/mlm.sh: masked-language-model training of a tiny BERT in plain
PyTorch, as Hugging Face's BertForMaskedLM and DataCollatorForLanguageModeling compute it
(transformers is not in Debian: the modules are written out, as in tests/test_backbones.cpp),
with the workload of experiments/reviews_bert_mlm.toml's MLM stage: vocabulary 105, 2 layers of
64, 4 heads, feed-forward 128, dropout 0.1, sequences of 32 ids (the reviews' lengths: 16-28 real
tokens, the rest padding), batches of 16, Adam lr 1e-3, 15% masking, the loss over the chosen
positions only. Prints samples/s over all the epochs, as tlab's stage counts them.

Usage: /usr/bin/python3 tools/bench/perf/pytorch_mlm.py THREADS [SEQUENCES] [EPOCHS]
"""
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

V, H, LAYERS, HEADS, INTER, L, BATCH = 105, 64, 2, 4, 128, 32, 16
SPECIAL = [0, 1, 2, 3, 4]  # [PAD] [UNK] [CLS] [SEP] [MASK]


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.o, self.ln1 = nn.Linear(H, H), nn.LayerNorm(H, eps=1e-12)
        self.i, self.out, self.ln2 = nn.Linear(H, INTER), nn.Linear(INTER, H), nn.LayerNorm(H, eps=1e-12)

    def forward(self, h, ext):
        n, l, d = h.shape[0], h.shape[1], H // HEADS
        t = lambda x: x.view(n, l, HEADS, d).transpose(1, 2)
        s = torch.matmul(t(self.q(h)), t(self.k(h)).transpose(-1, -2)) / math.sqrt(d) + ext
        p = F.dropout(F.softmax(s, -1), 0.1, self.training)
        c = torch.matmul(p, t(self.v(h))).transpose(1, 2).reshape(n, l, H)
        a = self.ln1(F.dropout(self.o(c), 0.1, self.training) + h)
        return self.ln2(F.dropout(self.out(F.gelu(self.i(a))), 0.1, self.training) + a)


class MaskedLm(nn.Module):
    def __init__(self):
        super().__init__()
        self.word, self.pos, self.types = nn.Embedding(V, H, padding_idx=0), nn.Embedding(64, H), nn.Embedding(2, H)
        self.ln = nn.LayerNorm(H, eps=1e-12)
        self.layers = nn.ModuleList([Layer() for _ in range(LAYERS)])
        self.dense, self.head_ln = nn.Linear(H, H), nn.LayerNorm(H, eps=1e-12)
        self.bias = nn.Parameter(torch.zeros(V))  # decoder tied to self.word

    def forward(self, ids, labels):
        pos = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
        h = self.word(ids) + self.types(torch.zeros_like(ids)) + self.pos(pos)
        h = F.dropout(self.ln(h), 0.1, self.training)
        ext = (1.0 - ids.ne(0).float())[:, None, None, :] * torch.finfo(torch.float32).min
        for layer in self.layers:
            h = layer(h, ext)
        rows = labels.view(-1).ne(-100).nonzero().squeeze(1)
        states = h.reshape(-1, H).index_select(0, rows)
        logits = self.head_ln(F.gelu(self.dense(states))) @ self.word.weight.t() + self.bias
        return F.cross_entropy(logits, labels.view(-1).index_select(0, rows))


def mask_tokens(inputs, special):
    labels = inputs.clone()
    prob = torch.full(labels.shape, 0.15)
    prob.masked_fill_(special[inputs], 0.0)
    chosen = torch.bernoulli(prob).bool()
    labels[~chosen] = -100
    replaced = torch.bernoulli(torch.full(labels.shape, 0.8)).bool() & chosen
    inputs = inputs.masked_fill(replaced, 4)
    randomised = torch.bernoulli(torch.full(labels.shape, 0.5)).bool() & chosen & ~replaced
    words = torch.randint(V, labels.shape, dtype=torch.long)
    return torch.where(randomised, words, inputs), labels


def main():
    threads = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3200
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ids = torch.randint(5, V, (n, L))
    lengths = torch.randint(16, 29, (n,))
    ids[:, 0] = 2
    for r in range(n):
        ids[r, lengths[r] - 1] = 3
        ids[r, lengths[r]:] = 0
    special = torch.zeros(V, dtype=torch.bool)
    special[SPECIAL] = True
    model = MaskedLm()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    seen, start = 0, time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(n)
        total = torch.zeros(())
        for b in range(0, n, BATCH):
            x = ids.index_select(0, perm[b:b + BATCH])
            inputs, labels = mask_tokens(x, special)
            opt.zero_grad(set_to_none=True)
            loss = model(inputs, labels)
            loss.backward()
            opt.step()
            total += loss.detach()
            seen += x.shape[0]
        total.item()
    seconds = time.perf_counter() - start
    print(f"pytorch mlm threads={threads} samples/s {seen / seconds:.0f}")


if __name__ == "__main__":
    main()
