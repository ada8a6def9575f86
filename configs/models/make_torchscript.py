#!/usr/bin/env python3
"""Writes the TorchScript example models (python3-torch, seeded, CPU):
    mlp.pt          Linear 64-128-64 with ReLU and LayerNorm
    cnn.pt          a small CNN: Conv2d 3-8-16, ReLU, pooling, Linear 16*4*4-10
    transformer.pt  one pre-norm transformer block, d_model 64, 4 heads, MLP 64-256-64
usage: make_torchscript.py OUT_DIR
"""
import os
import sys

import torch


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 128)
        self.act = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(128, 64)
        self.norm = torch.nn.LayerNorm(64)

    def forward(self, x):
        return self.norm(self.fc2(self.act(self.fc1(x))))


class Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.fc = torch.nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class Block(torch.nn.Module):
    def __init__(self, d=64, heads=4):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(d)
        self.attn = torch.nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm2 = torch.nn.LayerNorm(d)
        self.up = torch.nn.Linear(d, 4 * d)
        self.down = torch.nn.Linear(4 * d, d)

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm2(x))))


def main(out):
    torch.manual_seed(0)
    torch.jit.script(Mlp().eval()).save(os.path.join(out, "mlp.pt"))
    torch.jit.script(Cnn().eval()).save(os.path.join(out, "cnn.pt"))
    torch.jit.script(Block().eval()).save(os.path.join(out, "transformer.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
