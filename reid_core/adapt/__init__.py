"""Adapt a re-id model to a new camera network from unlabeled crops of it (unsupervised domain adaptation).

A model trained on one camera network loses most of its accuracy on another (Market -> CUHK03 here: Rank-1 81 ->
5). Two rungs, the second on top of the first, each measured on its own in BENCHMARKS.md:

- `bn` (AdaBN): every BatchNorm layer's statistics re-estimated on target crops by a forward pass; no labels,
  no gradient, seconds on a CPU.
- `self-train`: pseudo-label self-training as Cluster Contrast does it (embed the target crops, cluster their
  k-reciprocal Jaccard distances with DBSCAN, train on the clusters with a cluster memory, repeat). To fit a
  CPU it trains only the last stages of the backbone (`train_stages`) plus the BNNeck: the frozen trunk's
  output for each crop and its mirror image is computed once and kept, so a round costs a fraction of a
  forward pass over the target instead of several full training epochs.

Identity labels are never read: a dataset folder gives its training images (pid dropped, camera kept), any
other folder every image below it.

Modules: `config` (AdaptConfig, what a run reports), `targets` (the target crops), `batchnorm` (rung 1), `split`
(the trunk / trained stages and the trunk-map cache), `clustering` (pseudo-labels, the rung kept), `self_training`
(rung 2), `recipe` (the whole adaptation: adapt_model, preflight, provenance).
"""
