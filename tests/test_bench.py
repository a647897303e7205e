from nnlab.bench import main


def test_bench_times_every_model_and_both_loaders(capsys):
    main(steps=2, repeats=1)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "ms/step" not in line]
    assert [r.split(" | ")[0:2] for r in rows[:5]] == [["| linear", "mnist"], ["| mlp", "mnist"], ["| cnn", "mnist"],
                                                     ["| linear", "spiral"], ["| mlp", "spiral"]]
    assert "| nnlab |" in out and "| per-sample |" in out and "peak resident memory" in out
