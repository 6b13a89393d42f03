"""Models that read token ids and keep state outside their ``state_dict``, as Hugging Face
transformers do: IMP, the prunable set, controls and every export format on a small
``BertForSequenceClassification`` built from a config (nothing downloaded), plus the two
export bugs such models exposed, on plain torch modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lth

TRAIN = {"duration": "20it", "batch_size": 32, "eval_every": "10it"}


def token_data(n: int = 200, length: int = 12, vocab: int = 32) -> lth.Data:
    """Sequences of token ids; the label says whether most come from the lower half of the
    vocabulary."""
    ids = torch.randint(1, vocab, (n, length), generator=torch.Generator().manual_seed(0))
    labels = ((ids < vocab // 2).sum(1) > length // 2).long()
    cut = n * 4 // 5
    return lth.from_arrays(ids[:cut], labels[:cut], ids[cut:], labels[cut:])


class Bag(nn.Module):
    """Embeds token ids, averages them, classifies; its positions are a non-persistent
    buffer and its decoder shares the embedding's matrix, as in many language models."""

    def __init__(self, vocab: int = 32, dim: int = 64, classes: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, 256)
        self.out = nn.Linear(256, classes)
        self.decoder = nn.Linear(dim, vocab, bias=False)
        self.decoder.weight = self.embed.weight  # tied: one tensor, two state_dict keys
        self.register_buffer("positions", torch.arange(12), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids[:, : len(self.positions)]).mean(1)
        return self.out(torch.relu(self.hidden(h)))


def test_sparse_export_of_a_token_model_checks_on_token_ids():
    # The export's output check fed a float batch (torch.randn) to every model, so any
    # model whose first layer is an nn.Embedding failed in F.embedding.
    model = Bag()
    result = lth.LotteryModel(model, token_data(), levels=1, train=TRAIN,
                              prune={"rate": 0.9}).run(store=None)
    ticket = result.export(1, "sparse", model=model)
    ids = token_data().x_test[:8]
    model.load_state_dict(result.export(1, "state_dict", model=model))
    with torch.no_grad():
        assert torch.allclose(ticket.eval()(ids), model.eval()(ids), atol=1e-5)
    assert isinstance(ticket.hidden, lth.sparse_ticket.SparseLinear)  # 16,384 weights at 10%


def test_state_dict_export_has_the_models_own_keys():
    # lth's stored state holds a tied weight once and every buffer, non-persistent ones
    # too; given the model, the exported state_dict is the model's, so load_state_dict
    # (strict) takes it.
    model = Bag()
    result = lth.LotteryModel(model, token_data(), levels=1, train=TRAIN,
                              prune={"rate": 0.5}).run(store=None)
    weights = result.export(1, "state_dict", model=model)
    assert weights.keys() == model.state_dict().keys()
    fresh = Bag()
    fresh.load_state_dict(weights)
    kept = result.mask(1)["hidden.weight"]
    assert torch.equal(fresh.hidden.weight != 0, kept)
    assert torch.equal(weights["decoder.weight"], weights["embed.weight"])
    # Without the model the stored keys come back, as before (lth export on a config run).
    assert "positions" in result.export(1, "state_dict")


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def bert(transformers, layers: int = 2):
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=32, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(config)


def test_bert_prunable_set_is_its_linear_weights(transformers):
    model = bert(transformers)
    linear = [n + ".weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert lth.prunable_names(model) == linear
    assert len(linear) == 2 * 6 + 2  # Q, K, V, attention out, FFN in/out; pooler, classifier
    assert not any("embeddings" in n or "LayerNorm" in n for n in linear)


def test_bert_imp_ticket_and_control(transformers):
    model = bert(transformers)
    session = lth.LotterySession(
        model, token_data(), output="logits", levels=2, initializer="keep", train=TRAIN,
        prune={"rate": 0.5, "output_rate": 0.25},
        variants={"ticket": {}, "control": {"control": "random_reinit", "of": "ticket"}})
    groups = session.run(store=None)
    table = groups.table()
    assert len(table) == 6 and table.final_test_acc.notna().all()
    runs = groups.trials().set_index("variant")["run_dir"]
    ticket, control = lth.Result(runs["ticket"]), lth.Result(runs["control"])
    kept = ticket.mask(2).kept()
    # The output layer (the classifier, last reached) on its own rate: 64 · 0.75² = 36.
    assert kept["classifier.weight"] == 36
    assert kept["bert.encoder.layer.0.intermediate.dense.weight"] == 512  # 2048 · 0.5²
    assert torch.equal(control.mask(2)["classifier.weight"], ticket.mask(2)["classifier.weight"])
    # θ0 is the model's own (initializer="keep": BERT's N(0, 0.02²)); the ticket rewinds to it.
    name = "bert.encoder.layer.1.attention.self.query.weight"
    theta0, start = ticket.run.theta0()[name], ticket.weights(2, "start")[name]
    assert torch.equal(start, theta0 * ticket.mask(2)[name])
    assert 0.015 < float(theta0.std()) < 0.025


def test_bert_embeddings_included_classifier_excluded(transformers):
    model = bert(transformers, layers=1)
    exp = lth.LotteryModel(model, token_data(), output="logits", levels=1, train=TRAIN,
                           prune={"rate": 0.5, "include": ["*_embeddings.weight"],
                                  "exclude": ["bert.pooler.*", "classifier.weight"]})
    kept = exp.run(store=None).mask(1).kept()
    assert kept["bert.embeddings.word_embeddings.weight"] == 32 * 32 // 2
    assert "bert.embeddings.LayerNorm.weight" not in kept
    assert not {"classifier.weight", "bert.pooler.dense.weight"} & kept.keys()


def test_bert_ticket_exports(transformers, tmp_path):
    model = bert(transformers, layers=1)
    data = token_data()
    result = lth.LotteryModel(model, data, output="logits", levels=2, initializer="keep",
                              train=TRAIN, prune={"rate": 0.5}).run(store=None)
    weights = result.export(2, "state_dict", model=model)
    pruned = result.export(2, "pruned", model=model)
    lth.sparse_ticket.save(result.export(2, "sparse", model=model), tmp_path / "t.safetensors")
    ticket = lth.sparse_ticket.load(tmp_path / "t.safetensors", model)
    model.load_state_dict(weights)  # BERT's position_ids / token_type_ids are not in it
    ids = data.x_test[:8]
    with torch.no_grad():
        want = model.eval()(ids).logits
        for other in (pruned, ticket):
            assert torch.allclose(other.eval()(ids).logits, want, atol=1e-5)
    assert (weights["classifier.weight"] == 0).sum() == 64 - 16


def test_bert_without_output_names_the_choice(transformers):
    with pytest.raises(lth.ModelError, match=r"output=.*'logits'"):
        lth.LotteryModel(bert(transformers, layers=1), token_data(), levels=1,
                         train=TRAIN).run(store=None)
