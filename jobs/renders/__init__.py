"""The render feature: submission, the lifecycle and its ledgers, chunks, recovery, queries
(store functions that only flush), and the worker side: one attempt, a single render, a
chunked render, the sweeper and the webhook."""
