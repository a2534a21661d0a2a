"""Pure decision logic over plain data: reconciling, start and stop order between services, restart backoff, probe verdicts, rolling updates (and when they give up), balancing, autoscaling, canary analysis and steps, remediation, alert state, error budgets, which replica logs to keep, which files a service's revision covers (its import closure) and carbon sums.

No I/O, no wall clock (every function takes `now`), no threads. Functions return their decisions as data (plans) for the runtime to apply.
"""
