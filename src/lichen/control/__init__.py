"""Pure decision logic over plain data: reconciling, restart backoff, probe verdicts, rolling updates, balancing, autoscaling, rollout steps, alert state and carbon sums.

No I/O, no wall clock (every function takes `now`), no threads. Functions return their decisions as data (plans) for the runtime to apply.
"""
