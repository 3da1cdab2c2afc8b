"""benchmarks/mmrec_parity.py: MMRec's logged runs read back, and the parity rule."""

import pytest

from benchmarks import mmrec_parity

LOG = """\
Mon 30 Nov 2026 16:54:14 INFO =========1/2: Parameters:['seed', 'n_layers']=(999, 1)=======
Mon 30 Nov 2026 16:55:00 INFO test result: recall@20: 0.9000    ndcg@20: 0.9000
Mon 30 Nov 2026 16:57:23 INFO best valid result: recall@20: 0.3255    ndcg@20: 0.2000
Mon 30 Nov 2026 16:57:23 INFO test result: recall@20: 0.3056    ndcg@20: 0.2080
Mon 30 Nov 2026 16:57:23 INFO ████Current BEST████:
Parameters: ['seed', 'n_layers']=(999, 1),
Test: recall@20: 0.3056    ndcg@20: 0.2080
Mon 30 Nov 2026 16:57:23 INFO =========2/2: Parameters:['seed', 'n_layers']=(1000, 1)=======
Mon 30 Nov 2026 17:01:51 INFO best valid result: recall@20: 0.3333    ndcg@20: 0.2100
Mon 30 Nov 2026 17:01:51 INFO test result: recall@20: 0.3266    ndcg@20: 0.2200
Mon 30 Nov 2026 17:01:51 INFO =========1/1: Parameters:['seed', 'n_layers']=(1001, 1)=======
Mon 30 Nov 2026 17:02:00 INFO valid result: recall@20: 0.3000    ndcg@20: 0.2000
"""


def test_reads_each_finished_run_at_its_best_validation_epoch():
  runs = mmrec_parity.read_mmrec_log(LOG)
  # seed 999's test line before its best-validation line is an epoch's, not the run's; seed
  # 1001 did not finish
  assert runs == {
    999: {
      "valid": {"recall@20": 0.3255, "ndcg@20": 0.2},
      "test": {"recall@20": 0.3056, "ndcg@20": 0.208},
    },
    1000: {
      "valid": {"recall@20": 0.3333, "ndcg@20": 0.21},
      "test": {"recall@20": 0.3266, "ndcg@20": 0.22},
    },
  }


def test_parity_within_two_percent_or_one_pooled_std_where_seeds_spread_wider():
  assert mmrec_parity.parity([1.009, 1.019, 1.029], [1.0, 1.0, 1.0])["holds"]  # +1.9%
  tight = mmrec_parity.parity([1.05, 1.05, 1.05], [1.0, 1.0, 1.0])
  assert not tight["holds"] and tight["relative_difference"] == pytest.approx(0.05)
  # seeds spread 10% wide: a 5% difference is 0.5 pooled std, within the rule
  assert mmrec_parity.parity([0.95, 1.05, 1.15], [0.9, 1.0, 1.1])["holds"]
  assert not mmrec_parity.parity([1.2, 1.3, 1.4], [0.9, 1.0, 1.1])["holds"]
