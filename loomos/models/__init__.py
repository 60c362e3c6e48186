"""The wire contracts of LoomOS, one module per subject, shared by the SDK and the server.

- spec:      JobSpec, what a user submits (and how it is loaded from YAML or JSON)
- jobs:      a job's states, failure kinds, the job workflow's input, status and result
- scheduler: nodes, placement requests and decisions, the scheduler's state and messages
- training:  what a node worker is asked to run and what it reports (progress, checkpoints, logs)
- audit:     lifecycle events the job workflow hands to LoomDB
- pricing:   the offer and price a decision used
- api:       LoomCtl's request and response bodies

All of it is pure pydantic: workflow code imports these modules, so nothing here may touch the
network, the clock, torch or SQL. Timestamps are passed in by callers (workflow.now() in
workflows). Names given to Temporal live in loomos.temporal.names.
"""
