"""Any task: the user's loss and metrics, regression, language modelling, models whose output
is a tuple or dict, inputs of any dtype — through the whole IMP loop and its tables."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from torch import nn

import lth
from lth.data.streaming import from_dataset
from lth.tasks import Task

from .conftest import FAST_TRAIN


def diabetes() -> lth.Data:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    y = (y - y.mean()) / y.std()  # standardised target, float64 with whole numbers before
    return lth.from_arrays(x[:350] * 10, y[:350], x[350:] * 10, y[350:], name="diabetes")


def correct_counts(result: lth.Result, levels: int) -> bool:
    """Each layer keeps (1 - its rate) of its weights per level, to the nearest weight."""
    rates, sizes = result.config()["rates"], result.config()["prunable"]
    return all(abs(result.mask(lv).kept()[n] - sizes[n] * (1 - rates[n]) ** lv) < 1
               for lv in range(levels + 1) for n in sizes)


def rewound(result: lth.Result, level: int) -> bool:
    """The level's start is θ0 with the level's mask applied (bit for bit)."""
    theta0, mask, start = result.run.theta0(), result.mask(level), result.weights(level, "start")
    return all(torch.equal(start[n], theta0[n] * mask[n]) if n in mask.names()
               else torch.equal(start[n], theta0[n]) for n in theta0)


def test_regression_runs_imp_with_its_own_metrics(tmp_path):
    data = diabetes()
    assert data.y_train.dtype == torch.float32 and data.num_classes == 1
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    result = lth.LotteryModel(model, data, task="regression", levels=2,
                              train={**FAST_TRAIN, "lr": 0.01}).run(store=tmp_path)
    table = result.table()
    assert correct_counts(result, 2)
    assert "best_test_mae" in table and "final_test_mse" in table
    assert not any("acc" in c for c in table.columns)
    summary = result.summary(0)
    assert summary["early_stop_on"] == "val_loss"
    assert summary["best_test_mae"] == min(r["test_mae"] for r in result.run.level(0).history()
                                           if r["step"] > 0)
    assert rewound(result, 1) and rewound(result, 2)
    history = result.history(0)
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[1]  # it learns
    loaded = lth.load(tmp_path)
    assert "best_test_mae" in loaded.levels and "test_mae" in loaded.curves


class CharLM(nn.Module):
    """Embedding + LSTM over integer tokens; returns (logits, state) like nn.LSTM does."""

    def __init__(self, vocab: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, 12)
        self.lstm = nn.LSTM(12, 24, batch_first=True)
        self.head = nn.Linear(24, vocab)

    def forward(self, tokens):
        hidden, state = self.lstm(self.embed(tokens))
        return self.head(hidden), state


def char_data() -> lth.Data:
    text = inspect.getsource(json.decoder)  # a text shipped with Python
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text], dtype=np.int64)
    n = (len(ids) - 1) // 17
    seq = ids[:n * 17 + 1]
    x = np.stack([seq[i * 17:i * 17 + 16] for i in range(n)])
    y = np.stack([seq[i * 17 + 1:i * 17 + 17] for i in range(n)])
    cut = int(n * 0.8)
    return lth.from_arrays(x[:cut], y[:cut], x[cut:], y[cut:], name="json-decoder-chars",
                           num_classes=len(vocab))


def test_language_model_on_integer_tokens_with_a_tuple_output(tmp_path):
    data = char_data()
    assert data.x_train.dtype == torch.int64 and data.y_train.shape[1] == 16
    model = CharLM(data.num_classes)
    with pytest.raises(lth.ModelError, match=r"returns a tuple.*output=.*index 0\.\.1"):
        lth.LotteryModel(model, data, task="language_model").check()
    exp = lth.LotteryModel(model, data, task="language_model", output=0, levels=2,
                           train={**FAST_TRAIN, "lr": 0.01},
                           prune={"include": ["embed.weight", "lstm.weight_*"]})
    result = exp.run(store=tmp_path)
    assert correct_counts(result, 2)
    row = result.summary(0)
    assert row["best_test_ppl"] == pytest.approx(np.exp(min(
        r["test_loss"] for r in result.run.level(0).history() if r["step"] > 0)))
    assert 0 < row["final_test_acc"] < 1
    assert row["best_test_ppl"] < data.num_classes  # better than uniform guessing
    assert rewound(result, 2)
    assert result.mask(1).names() == ["embed.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0",
                                      "head.weight"]


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.logits, self.aux = nn.Linear(32, 10), nn.Linear(32, 3)

    def forward(self, x):
        h = self.body(x)
        return {"logits": self.logits(h), "aux": self.aux(h)}


def test_a_dict_output_is_selected_and_early_stop_follows_a_metric(digits, tmp_path):
    model = TwoHeads()
    with pytest.raises(lth.ModelError, match=r"one of its keys \['logits', 'aux'\]"):
        lth.LotteryModel(model, digits).check()
    result = lth.LotteryModel(model, digits, output="logits", early_stop="acc", levels=2,
                              train=FAST_TRAIN).run(store=tmp_path)
    assert correct_counts(result, 2) and rewound(result, 2)
    summary = result.summary(1)
    assert summary["early_stop_on"] == "val_acc"
    history = [r for r in result.run.level(1).history() if r["step"] > 0]
    best = max(history, key=lambda r: (r["val_acc"], -r["step"]))
    assert summary["early_stop_step"] == best["step"]


def test_multilabel_targets_per_label(digits, tmp_path):
    """Two labels per digit (even? greater than 4?) from the same images."""
    def labels(y):
        return np.stack([(y % 2 == 0), (y > 4)], axis=1).astype("float32")

    data = lth.from_arrays(digits.x_train.numpy(), labels(digits.y_train.numpy()),
                           digits.x_test.numpy(), labels(digits.y_test.numpy()),
                           name="digits-multilabel")
    assert data.y_train.shape[1] == 2 and data.num_classes == 2
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))
    result = lth.LotteryModel(model, data, task="multilabel", levels=2,
                              train={**FAST_TRAIN, "lr": 0.01}).run(store=tmp_path)
    assert correct_counts(result, 2) and rewound(result, 2)
    s = result.summary(2)
    assert 0.5 < s["final_test_acc"] <= 1 and s["final_test_exact"] <= s["final_test_acc"]
    with pytest.raises(lth.DataError, match="needs 0/1 per label"):
        lth.LotteryModel(model, digits, task="multilabel").check()


def hinge(output, target):
    margin = output.gather(1, target[:, None])
    return torch.clamp(1 - margin + output, min=0).mean()


def top3(output, target):
    return (output.topk(3, dim=1).indices == target[:, None]).any(1).float()


def accuracy(output, target):
    return (output.argmax(1) == target).float()


HINGE = Task("hinge", hinge, {"acc": accuracy, "top3": top3}, labels="class")
PORTABLE = Task("hinge_portable", hinge, {"top3": top3}, labels="class")


def test_a_task_from_python_with_its_own_loss_and_metrics(digits, small_mlp, tmp_path):
    result = lth.LotteryModel(small_mlp, digits, task=HINGE, levels=1,
                              train=FAST_TRAIN).run(store=tmp_path)
    summary = result.summary(1)
    assert {"best_test_acc", "best_test_top3", "final_test_top3"} <= set(summary)
    assert summary["final_test_top3"] >= summary["final_test_acc"]
    default = lth.LotteryModel(small_mlp, digits, levels=1, train=FAST_TRAIN)
    assert default.spec()["lth"] and "task" not in default.spec()  # classification as before
    assert lth.LotteryModel(small_mlp, digits, task=HINGE).spec()["task"]["loss"].endswith(
        "hinge")
    with pytest.raises(lth.ConfigError, match="lth's own"):
        lth.LotteryModel(small_mlp, digits, task=Task("regression", hinge, {"top3": top3}))


def test_a_tasks_identity_names_what_computes_it(digits, small_mlp):
    import functools

    with pytest.raises(lth.ConfigError, match="lambda or a nested function"):
        Task("l", lambda o, t: o.sum(), {"top3": top3})
    with pytest.raises(lth.ConfigError, match="has no metrics"):
        Task("bare", hinge)
    smooth = [Task("s", nn.CrossEntropyLoss(label_smoothing=s), {"top3": top3}).describe()
              for s in (0.0, 0.1)]
    assert smooth[0]["loss"] != smooth[1]["loss"] and "label_smoothing" in smooth[1]["loss"]
    partial = Task("p", functools.partial(torch.nn.functional.cross_entropy,
                                          label_smoothing=0.1), {"top3": top3}).describe()
    assert partial["loss"] == ("torch.nn.functional.cross_entropy(*(), "
                               "**{'label_smoothing': 0.1})")
    with pytest.raises(lth.ModelError, match=r"one of its keys \['logits', 'aux'\]"):
        lth.LotteryModel(TwoHeads(), digits, output="logit").check()


def test_a_task_object_travels_to_worker_processes(digits, small_mlp, tmp_path):
    session = lth.LotterySession(small_mlp, digits, train=FAST_TRAIN, levels=1, seeds=[0, 1],
                                 task=PORTABLE, variants={"t": {}})
    result = session.run(store=tmp_path, executor="local", workers=2)
    assert result.trials().status.tolist() == ["done", "done"]
    assert "early_stop_test_top3" in result.table()


def test_targets_that_do_not_fit_the_task_get_one_clear_error(digits, small_mlp):
    data = diabetes()
    model = nn.Sequential(nn.Linear(10, 4))
    with pytest.raises(lth.DataError, match="needs 1-D class indices.*y_train is float32.*"
                                            "use task 'regression'"):
        lth.LotteryModel(model, data).check()
    with pytest.raises(lth.ConfigError, match="early_stop"):
        lth.LotteryModel(small_mlp, digits, early_stop="mae")


def test_integer_features_fed_to_a_linear_layer_say_why(small_mlp):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 16, size=(100, 64)), rng.integers(0, 10, size=100)
    data = lth.from_arrays(x[:80], y[:80], x[80:], y[80:])
    assert data.x_train.dtype == torch.int64
    with pytest.raises(lth.ModelError, match="int64 inputs.*token ids.*give floats"):
        lth.LotteryModel(small_mlp, data).check()


class Items(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.mark.parametrize("kind", ["tokens", "float64"])
def test_in_memory_and_streamed_datasets_keep_the_same_dtypes(kind):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, size=(40, 8)) if kind == "tokens" else rng.normal(size=(40, 8))
    y = rng.integers(0, 3, size=40)
    ds_train, ds_test = Items(x[:30], y[:30]), Items(x[30:], y[30:])
    memory = from_dataset(ds_train, ds_test, stream=False)
    streamed = from_dataset(ds_train, ds_test, stream=True)
    want = torch.int64 if kind == "tokens" else torch.float32
    assert memory.x_train.dtype == want
    batch = streamed.x_train[torch.arange(4)]
    assert batch.dtype == want and torch.equal(batch, memory.x_train[:4])


def test_from_dataset_names_the_split_of_a_mismatched_item():
    good = Items([np.zeros(13, "float32")] * 4, [0, 1, 0, 1])
    bad = Items([np.zeros(13, "float32")] * 2 + [np.zeros(12, "float32")], [0, 1, 0])
    with pytest.raises(lth.DataError, match=r"item 2 of the test dataset is float32 \(12,\) "
                                            r"but that of item 0 of the train dataset is "
                                            r"float32 \(13,\)"):
        from_dataset(good, bad, stream=False)


def test_the_toml_task_section(tmp_path, capsys):
    from lth.cli import main

    toml = tmp_path / "t.toml"
    toml.write_text('name = "t"\nn_levels = 1\n[model]\nname = "mlp"\nhidden = [16]\n'
                    '[data]\nname = "digits"\n[train]\nduration = "40it"\n'
                    'eval_every = "20it"\nbatch_size = 32\n[task]\nearly_stop = "acc"\n')
    assert main(["run", str(toml), "--store", str(tmp_path / "s"), "--quiet"]) == 0
    assert "acc @ early stop" in capsys.readouterr().out
    (run,) = (tmp_path / "s").iterdir()
    assert lth.Result(run).summary(1)["early_stop_on"] == "val_acc"
    toml.write_text(toml.read_text().replace('early_stop = "acc"', 'name = "regresion"'))
    assert main(["run", str(toml), "--store", str(tmp_path / "s")]) == 2
    assert "did you mean 'regression'" in capsys.readouterr().err


def test_a_regression_output_of_the_wrong_width_is_refused(tmp_path):
    data = diabetes()
    model = nn.Sequential(nn.Linear(10, 2))  # (N, 2) would broadcast against (N,) targets
    with pytest.raises(lth.ModelError, match=r"output has shape \(2, 2\).*one number per "
                                             "target"):
        lth.LotteryModel(model, data, task="regression").check()


def test_compare_keeps_every_runs_metrics(digits, small_mlp, tmp_path):
    reg = lth.LotteryModel(nn.Sequential(nn.Linear(10, 1)), diabetes(), task="regression",
                           levels=1, train=FAST_TRAIN).run(store=tmp_path)
    cls = lth.LotteryModel(small_mlp, digits, levels=1, train=FAST_TRAIN).run(store=tmp_path)
    table = lth.experiment.compare([reg, cls], ["reg", "cls"])
    assert {"reg mae@es", "cls acc@es", "cls final acc", "reg final mse"} <= set(table)
