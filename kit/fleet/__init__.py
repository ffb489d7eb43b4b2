"""Fleet rollouts: device facts, fingerprint gating, compose rendering, the
rollout record, canary and waves with rollback, fleet status.

Modules: facts (what a device is), gate (may this image run there),
compose (the file kit renders and running compose against a device),
state (record and last-good files, atomic), rollout (the waves), status."""
