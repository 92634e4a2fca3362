"""Scale-out (docs/distributed.md): Ray rollout workers and reward tasks, torch.distributed
learners, the async rollout thread. Optional: nothing here is imported unless a `dist.*` key
is set, and only `pip install 'rftkit[dist]'` brings Ray."""
