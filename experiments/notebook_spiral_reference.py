"""The notebook's own numpy spiral code, over many data draws: how much its printed final loss
depends on the draw, as the yardstick for nnlab's spiral numbers.

    .venv/bin/python experiments/notebook_spiral_reference.py      # ~50 s on a 2-core CPU

Measured (2-core CPU, numpy 2.4.6): linear, 200 iterations, 30 draws (np.random.seed 0..29):
final loss 0.7606 ± 0.0114 (min 0.7350, max 0.7863; 26 of 30 in 0.72-0.77); MLP, 10,000
iterations, 6 draws (seeds 0..5): 0.2469 ± 0.0069 (min 0.2430, max 0.2609; 6 of 6 in 0.23-0.27).
The notebook printed 0.7441 and 0.2510 for its one draw.
"""
import numpy as np

N, D, K, REG, STEP = 100, 2, 3, 1e-3, 1.0


def spiral():
    X, y = np.zeros((N * K, D)), np.zeros(N * K, dtype="uint8")
    for j in range(K):
        ix = range(N * j, N * (j + 1))
        r = np.linspace(0.0, 1, N)
        t = np.linspace(j * 4, (j + 1) * 4, N) + np.random.randn(N) * 0.2
        X[ix], y[ix] = np.c_[r * np.sin(t), r * np.cos(t)], j
    return X, y


def softmax_grad(scores, y):
    e = np.exp(scores - scores.max(1, keepdims=True))
    probs = e / e.sum(1, keepdims=True)
    loss = -np.log(probs[range(len(y)), y]).mean()
    d = probs.copy()
    d[range(len(y)), y] -= 1
    return loss, d / len(y)


def linear(seed, iters=200):
    np.random.seed(seed)
    X, y = spiral()
    W, b = 0.01 * np.random.randn(D, K), np.zeros((1, K))
    for _ in range(iters):
        loss, d = softmax_grad(X @ W + b, y)
        loss += 0.5 * REG * np.sum(W * W)
        W -= STEP * (X.T @ d + REG * W)
        b -= STEP * d.sum(0, keepdims=True)
    return loss  # the loss printed at the last iteration, as the notebook prints it


def mlp(seed, iters=10_000, h=100):
    np.random.seed(seed)
    X, y = spiral()
    W, b, W2, b2 = 0.01 * np.random.randn(D, h), np.zeros((1, h)), 0.01 * np.random.randn(h, K), np.zeros((1, K))
    for _ in range(iters):
        hidden = np.maximum(0, X @ W + b)
        loss, d = softmax_grad(hidden @ W2 + b2, y)
        loss += 0.5 * REG * (np.sum(W * W) + np.sum(W2 * W2))
        dhidden = d @ W2.T
        dhidden[hidden <= 0] = 0
        W2 -= STEP * (hidden.T @ d + REG * W2)
        b2 -= STEP * d.sum(0, keepdims=True)
        W -= STEP * (X.T @ dhidden + REG * W)
        b -= STEP * dhidden.sum(0, keepdims=True)
    return loss


if __name__ == "__main__":
    for name, fn, seeds, (lo, hi) in (("linear", linear, range(30), (0.72, 0.77)),
                                      ("mlp", mlp, range(6), (0.23, 0.27))):
        losses = np.array([fn(s) for s in seeds])
        inside = ((losses >= lo) & (losses <= hi)).sum()
        print(f"{name}: final loss {losses.mean():.4f} ± {losses.std(ddof=1):.4f} over {len(losses)} draws "
              f"(min {losses.min():.4f}, max {losses.max():.4f}; {inside} of {len(losses)} in {lo}-{hi})")
