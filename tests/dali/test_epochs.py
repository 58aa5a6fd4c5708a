"""EpochPlan: interleaved shards, the positions that key every draw, last-batch policies."""

import numpy as np
import pytest

from dali_ipmix.epochs import POLICIES, EpochPlan, Feed


@pytest.mark.parametrize("num_samples", [21, 24, 100])
@pytest.mark.parametrize("num_shards,batch_size", [(2, 4), (3, 2), (4, 5)])
def test_step_i_of_n_shards_reads_step_i_of_one_process_with_n_times_the_batch(num_samples, num_shards,
                                                                              batch_size):
    one = EpochPlan(num_samples, num_shards * batch_size, 0, 1, "partial", shuffle_seed=3)
    shards = [EpochPlan(num_samples, batch_size, s, num_shards, "partial", shuffle_seed=3)
              for s in range(num_shards)]
    for epoch in (0, 1):
        whole_pos, whole_idx = one.batch_positions(epoch), one.batches(epoch)
        parts_pos = [p.batch_positions(epoch) for p in shards]
        parts_idx = [p.batches(epoch) for p in shards]
        for i in range(len(whole_pos)):
            pos = np.concatenate([b[i] for b in parts_pos if i < len(b)])
            idx = np.concatenate([b[i] for b in parts_idx if i < len(b)])
            order = np.argsort(pos)
            assert np.array_equal(pos[order], whole_pos[i])
            assert np.array_equal(idx[order], whole_idx[i])   # the same sample at the same position
        assert sum(len(p) for p in shards) >= len(one) - num_shards + 1


def test_positions_index_the_epoch_order():
    plan = EpochPlan(30, 4, 1, 3, "partial", shuffle_seed=9)
    order = plan.order(5)
    assert np.array_equal(plan.shard_indices(5), order[plan.positions(5)])
    assert np.array_equal(plan.positions(5), np.arange(1, 30, 3))


@pytest.mark.parametrize("policy", POLICIES)
def test_every_occurrence_has_its_own_position(policy):
    """``fill`` repeats samples; the repeats get positions past the data set, unique over all shards,
    so that a repeat is augmented afresh."""
    n, shards = 22, 4
    plans = [EpochPlan(n, 4, s, shards, policy, shuffle_seed=1) for s in range(shards)]
    pos = np.concatenate([p.positions(0) for p in plans])
    assert len(np.unique(pos)) == len(pos)
    for p in plans:
        assert len(p.positions(0)) == len(p.shard_indices(0)) == sum(map(len, p.batches(0)))
    if policy == "fill":
        assert all(len(p.positions(0)) == 8 for p in plans) and pos.max() >= n
        # a repeat reads the shard's own samples again, from its start
        p = plans[3]   # positions 3, 7, 11, 15, 19: 5 samples, 3 repeats
        idx = p.shard_indices(0)
        assert np.array_equal(idx[5:], idx[:3])
    else:
        assert pos.max() < n


def test_feed_draws_mixing_pictures_by_position():
    """The mixing picture of a sample depends on (seed, epoch, position), not on the batch split."""
    from nvidia.dali.types import BatchInfo
    files, labels, mix = [f"{i}.jpg" for i in range(10)], list(range(10)), [f"m{i}.jpg" for i in range(7)]

    def feed(batch_size, epoch):
        f = Feed(files, labels, mix, mixing_seed=4, plan=EpochPlan(10, batch_size, 0, 1), start_epoch=epoch)
        return [x.tobytes() for i in range(len(f.plan)) for x in f(BatchInfo(i, 0))[2]]
    a = feed(10, 2)
    assert feed(3, 2) == a
    assert feed(10, 3) != a   # another epoch
