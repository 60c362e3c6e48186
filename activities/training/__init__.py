"""Training on a node: the node worker's activities and what they are made of.

- activities.py: TrainingActivities (run_training, read_training_log, read_training_progress);
- launch.py: checking a request on the node, torchrun's command line, the ranks' environment;
- processes.py: an attempt's processes: starting torchrun, finding them all, stopping them;
- progress.py: following an attempt while it runs (progress channel, checkpoint notices,
  torchrun closing the ranks after a failure);
- failures.py: why an attempt failed, from torchrun's exit and log (pure functions);
- oom.py: the kernel's OOM-kill counter, read around an attempt;
- records.py: where an attempt's log and progress file live on the node, read back safely.

The node worker imports TrainingActivities from here.
"""

from loomos.activities.training.activities import TrainingActivities

__all__ = ["TrainingActivities"]
