"""The one forget-data pipeline: every form of forget set, the indices it assigns, and its errors."""

import pytest
import torch
from conftest import SmallCNN, rel_err, warmed
from oracle import influence, one, per_sample_grads
from torch.utils.data import (BatchSampler, DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler,
                              Subset, SubsetRandomSampler, TensorDataset)

from imu_fast import fisher_diagonal, influence_scores, per_sample_grad_norms, unlearn
from imu_fast.forget_set import as_forget_set


class Logged(Dataset):
    """A map-style dataset that records which indices were read."""

    def __init__(self, x, y):
        self.x, self.y, self.read = x, y, []

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.read.append(int(i))
        return self.x[i], self.y[i]


class Stream(IterableDataset):
    """Yields (x, y) samples; ``replays=False`` makes a second pass yield nothing, ``reshuffle`` a new order."""

    def __init__(self, x, y, replays=True, reshuffle=False):
        self.x, self.y, self.replays, self.reshuffle, self.passes = x, y, replays, reshuffle, 0

    def __iter__(self):
        self.passes += 1
        if self.passes > 1 and not self.replays:
            return iter(())
        order = torch.randperm(len(self.x)) if self.reshuffle and self.passes > 1 else torch.arange(len(self.x))
        return iter([(self.x[i], self.y[i]) for i in order])


@pytest.fixture(scope="module")
def cnn_task():
    torch.manual_seed(0)
    x = torch.randn(200, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 5, (200,))
    model = warmed(SmallCNN(5).double(), x).eval()
    return model, x, y


def scores_of(model, x, y, idx):
    g = per_sample_grads(model, [one((x[i], y[i])) for i in idx], list(model.head.parameters()))
    return influence(g)


def test_a_sampler_names_the_forget_set(cnn_task):
    model, x, y = cnn_task
    forget = torch.randperm(200, generator=torch.Generator().manual_seed(1))[:37]
    loader = DataLoader(TensorDataset(x, y), batch_size=8, sampler=SubsetRandomSampler(forget.tolist()))
    res = influence_scores(model, loader)
    order = torch.sort(forget).values
    assert torch.equal(res.indices, order) and res.n == 37
    assert rel_err(res.scores, scores_of(model, x, y, order.tolist())) < 1e-9
    layer = influence_scores(model, loader, targets=[model.head])
    assert torch.equal(layer.indices, order) and rel_err(layer.scores, res.scores) < 1e-9
    assert per_sample_grad_norms(model, None, loader, params=[model.head]).shape == (37,)
    fisher = fisher_diagonal(model, None, loader, params=["head.weight"])
    g = per_sample_grads(model, [one((x[i], y[i])) for i in order.tolist()], [model.head.weight])
    assert rel_err(fisher["head.weight"].reshape(-1), (g * g).mean(0)) < 1e-9


def test_unlearning_through_a_sampler_reads_only_the_forget_set(cnn_task):
    model, x, y = cnn_task
    data = Logged(x.float(), y)
    forget = [3, 17, 40, 41, 99, 150, 151, 152]
    for method in ("ga", "imu"):
        data.read.clear()
        torch.manual_seed(0)
        report = unlearn(SmallCNN(5), DataLoader(data, batch_size=3, sampler=SubsetRandomSampler(forget)),
                         method=method, epochs=2, top_fraction=1.0)
        assert set(data.read) == set(forget), method
        assert report.n_forget == 8 and report.indices.tolist() == forget


def test_shuffled_batch_sampler_and_drop_last_keep_every_sample_in_index_order(cnn_task):
    model, x, y = cnn_task
    ds = TensorDataset(x, y)
    plain = influence_scores(model, Subset(ds, range(50)), batch_size=16)
    shuffled = DataLoader(Subset(ds, range(50)), batch_sampler=BatchSampler(RandomSampler(range(50)), 7, drop_last=True))
    dropping = DataLoader(Subset(ds, range(50)), batch_size=16, shuffle=True, drop_last=True)
    for loader in (shuffled, dropping):
        res = influence_scores(model, loader)
        assert torch.equal(res.indices, torch.arange(50)) and rel_err(res.scores, plain.scores) < 1e-12


def test_a_custom_batch_sampler_is_flattened(cnn_task):
    model, x, y = cnn_task
    batches = [[9, 2], [30], [4, 5, 6]]
    res = influence_scores(model, DataLoader(TensorDataset(x, y), batch_sampler=batches))
    assert res.indices.tolist() == [2, 4, 5, 6, 9, 30]
    assert rel_err(res.scores, scores_of(model, x, y, [2, 4, 5, 6, 9, 30])) < 1e-9


def test_a_sampler_that_repeats_samples_is_refused(cnn_task):
    model, x, y = cnn_task
    loader = DataLoader(TensorDataset(x, y), batch_size=4, sampler=[1, 5, 5, 8, 1])
    for call in (lambda: influence_scores(model, loader), lambda: unlearn(model, loader, method="ga")):
        with pytest.raises(ValueError, match=r"names dataset indices \[1, 5\] more than once"):
            call()


def test_a_loader_without_batch_size_is_refused(cnn_task):
    model, x, y = cnn_task
    with pytest.raises(ValueError, match="batch_size=None"):
        influence_scores(model, DataLoader(TensorDataset(x, y), batch_size=None))


def test_streams_match_map_style_and_unreplayable_ones_say_so(cnn_task):
    model, x, y = cnn_task
    x, y = x[:30], y[:30]
    ref = influence_scores(model, (x, y), batch_size=8)
    for budget in (0, 1 << 30):  # streamed twice, or kept from the first pass
        res = influence_scores(model, Stream(x, y), batch_size=8, memory_budget=budget)
        assert torch.equal(res.indices, torch.arange(30)) and rel_err(res.scores, ref.scores) < 1e-12
        layer = influence_scores(model, DataLoader(Stream(x, y), batch_size=8), targets=[model.head],
                                 memory_budget=budget)
        assert rel_err(layer.scores, ref.scores) < 1e-9
    once = influence_scores(model, Stream(x, y, replays=False), batch_size=8)  # kept: read once
    assert rel_err(once.scores, ref.scores) < 1e-12
    for kind in ({"replays": False}, {"reshuffle": True}):
        with pytest.raises(ValueError, match="stream cannot be replayed"):
            influence_scores(model, Stream(x, y, **kind), batch_size=8, memory_budget=0)
        with pytest.raises(ValueError, match="stream cannot be replayed"):
            influence_scores(model, Stream(x, y, **kind), batch_size=8, memory_budget=0, targets=[model.head])
    exhausted = Stream(x, y, replays=False)
    influence_scores(model, exhausted, batch_size=8)
    with pytest.raises(ValueError, match="stream yielded no sample.*exhausted"):
        influence_scores(model, exhausted, batch_size=8)


def test_unlearn_streams_an_iterable_dataset(cnn_task):
    _, x, y = cnn_task
    x, y = x[:40].float(), y[:40]
    for method in ("ga", "imu"):
        torch.manual_seed(0)
        streamed = SmallCNN(5)
        torch.manual_seed(0)
        mapped = SmallCNN(5)
        settings = dict(method=method, epochs=2, batch_size=8, top_fraction=1.0, freeze_batchnorm=True)
        report = unlearn(streamed, Stream(x, y), **settings)
        assert report.n_forget == 40 and report.epochs_run == 2 and report.indices.tolist() == list(range(40))
        if method == "imu":  # the same weights as from the map-style set
            reference = unlearn(mapped, (x, y), **settings)
            assert torch.equal(report.weights, reference.weights)
    with pytest.raises(ValueError, match="stream cannot be replayed"):
        unlearn(SmallCNN(5), Stream(x, y, reshuffle=True), method="ga", epochs=2)


def test_columns_dicts_lists_and_datasets_agree(cnn_task):
    model, x, y = cnn_task
    x, y = x[:20], y[:20]
    ref = influence_scores(model, (x, y), batch_size=6).scores
    forms = [TensorDataset(x, y), [x, y], list(zip(x, y)), DataLoader(TensorDataset(x, y), batch_size=5),
             DataLoader(TensorDataset(x, y), sampler=SequentialSampler(range(20)), batch_size=3)]
    for form in forms:
        assert rel_err(influence_scores(model, form, batch_size=6).scores, ref) < 1e-12, type(form).__name__


def test_dict_columns_in_the_hugging_face_convention():
    from model_zoo import bert_classifier, token_sequences

    model = bert_classifier()
    samples = token_sequences(classes=3)
    columns = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    a = influence_scores(model, samples, batch_size=4)
    b = influence_scores(model, columns, batch_size=4)
    assert rel_err(b.scores, a.scores) < 1e-12


@pytest.mark.parametrize("bad,err", [((torch.zeros(3, 2), torch.zeros(4)), "disagree on the number of samples"),
                                     ({"a": torch.zeros(3), "b": torch.zeros(2)}, "disagree"),
                                     ("forget.pt", "must be a map-style dataset"),
                                     (42, "must be a map-style dataset")])
def test_unusable_forms_are_refused(bad, err):
    with pytest.raises((TypeError, ValueError), match=err):
        as_forget_set(bad)


def test_empty_sets_are_refused():
    for empty in ([], TensorDataset(torch.zeros(0, 2)), DataLoader(TensorDataset(torch.zeros(5, 2)), batch_size=2,
                                                                    sampler=[])):
        with pytest.raises(ValueError, match="empty"):
            as_forget_set(empty)
