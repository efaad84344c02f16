"""Every threshold the rules use, with where it comes from.

Published detectors fire on healthy runs when their fixed thresholds meet noisy curves (UMLAUT flagged all 68
normal MNIST models in its own logs, DeepDiagnosis 37 of 78). Two habits keep accmon out of that trap:
dynamic rules need *evidence that training is in trouble* (see `health.py`), as AUTOTRAINER gates its gradient
checks on accuracy not improving; and evidence is scale-free where it can be (ratios between layers, update to
weight ratios, chance level for the number of classes). Values marked "measured" come from the demos in
`demos/` recorded with the PyTorch probe; "own" marks a choice of ours, with its reasoning.
"""

from __future__ import annotations

# ---- when rules are evaluated -------------------------------------------------------------------------
# Rules run at steps that are multiples of this interval (and at the end of every frame), so a verdict does not
# depend on how steps were batched into frames. Own: coarser as the run grows keeps the cost per frame flat
# while the latency stays a few percent of the steps seen.
# Past 65,536 steps every 256: an evaluation costs ~20 µs even when a frame holds nothing the rules read, and
# every 64 steps took half the I/O thread's batched throughput (bench/transport.py); 256 steps is 0.4% of the
# steps seen there, or less.
EVAL_EVERY = ((256, 8), (1024, 16), (4096, 32), (65536, 64))  # (below this step, every n steps)
EVAL_EVERY_LATE = 256
# Recent measured values kept per metric. Own: 256 covers the longest smoothing window (200 steps).
SERIES_CAP = 256

# ---- is training in trouble? (health.py) -------------------------------------------------------------
# Smoothing window for loss and accuracy: half an epoch, within these bounds (own: a median over tens of
# batches is steady enough to compare, and half an epoch reacts within the first epoch).
WINDOW_MIN, WINDOW_MAX, WINDOW_DEFAULT = 8, 200, 32
# The loss the run started from: the median of its first steps (own: one step is too noisy; the healthy CNN demo
# starts at 1.86 and is at 1.39 two steps later).
START_STEPS = 10
# How long a run may show no progress before it counts as stuck: two epochs, within these bounds. AUTOTRAINER
# judges after 30% of the planned epochs; the planned length is unknown here, so two epochs it is (measured: the
# healthy CNN demo sits at chance for 17 steps, 1.3 epochs, before it learns). Without epochs: 200 steps (own).
PATIENCE_EPOCHS, PATIENCE_MIN, PATIENCE_MAX, PATIENCE_DEFAULT = 2, 50, 1000, 200
# Not learning: the smoothed loss fell by less than this fraction of where it started (own: every healthy demo
# falls by more than half within two epochs).
MIN_PROGRESS = 0.10
# Worse than chance: the smoothed loss is above this multiple of the loss of a model that ignores its inputs
# (the entropy of the class distribution: ln C for balanced classes). Own margin: 10% above chance, so a run
# that sits at chance before it learns (the healthy CNN demo: 1.39 vs ln 4 = 1.386) does not count.
CHANCE_LOSS_FACTOR = 1.10
# At chance: accuracy within this fraction of the way from chance (the majority share) to perfect. Own: 10%
# is far above the noise of a mean over tens of batches, and far below what a learning model reaches.
CHANCE_ACC_MARGIN = 0.10
# Handled imbalance: with a majority class of SKEWED_MAJORITY or more, accuracy at the majority's share is not "at
# chance" when the model's predictions are spread: its top predicted class takes less than the majority's share, by
# this much or twice the standard error of a median over a few batches, whichever is larger. A class-weighted loss
# trades majority accuracy for minority recall; a collapsed model answers the majority at least as often as it
# occurs. Own, measured: the weighted 94/6 demo predicts its top class 0.89-0.91 of the time at 0.95 accuracy; the
# unweighted 90/10 and 97/3 demos predict it 0.97-1.0 of the time.
HANDLED_IMBALANCE_MARGIN = 0.02
# A model whose balanced accuracy (mean per-class recall over sampled batches) is this share of the way from 1/K
# to 1 tells the classes apart: with skewed classes, accuracy near the majority's share is then a trade made by
# class weights, not a model that ignores its inputs (issue 15: 85/10/5 classes under a weighted loss). Own.
BALANCED_MARGIN = 0.25
# Diverging: the smoothed loss is this multiple of its best so far (own: warm restarts and noisy batches raise
# the loss by tens of percent, never a factor of two).
DIVERGE_FACTOR = 2.0
# ...and it rose by at least this share of where it started (issue 15: a GRU at 95% accuracy whose loss went
# 0.02 -> 0.09 is four times its best and not diverging; a rise is measured on the scale of the task's loss).
DIVERGE_MIN_RISE = 0.25

# ---- numerics ----------------------------------------------------------------------------------------
# Non-finite gradients in this many consecutive samples (with a finite, improving loss) before they count.
# Own: PyTorch's GradScaler meets Inf gradients at the start of mixed-precision training and skips those steps
# while it lowers its scale; a streak this long means the scale cannot recover.
NONFINITE_GRAD_STREAK = 3

# ---- gradients ---------------------------------------------------------------------------------------
# Exploding: the input-side layer's gradient norm is this many times the output-side layer's. AUTOTRAINER
# (ICSE 2021) flags 70; we gate on trouble as it does, and flag an order of magnitude (measured: healthy demos
# have ratios of 0.05 to 0.5, growing toward the output; the exploding demo 17).
EXPLODE_DEPTH_RATIO = 10.0
EXPLODE_DEPTH_RATIO_CRITICAL = 70.0  # AUTOTRAINER's beta_3
# ... or the global gradient norm grew by this factor since the first steps (own: two orders of magnitude).
EXPLODE_GROWTH = 100.0
# Vanishing: a layer's gradient norm below this fraction of the output-side layer's. AUTOTRAINER's beta_1
# (ratio of first to last layer gradient, 1e-3).
VANISH_RATIO = 1e-3
# ... or its root-mean-square gradient below this absolute value: SageMaker Debugger's VanishingGradient
# default (mean absolute gradient below 1e-7), also DeepDiagnosis' threshold_VG.
VANISH_RMS = 1e-7

# ---- activations -------------------------------------------------------------------------------------
# Dead ReLU: fraction of a ReLU layer's outputs that are exactly zero. AUTOTRAINER's gamma and DeepDiagnosis'
# threshold_layer_1 are both 0.7 (a healthy ReLU layer outputs zero about half the time; measured 0.51).
DEAD_RELU_FRACTION = 0.7
# A layer whose outputs are all but always zero passes no gradient at all.
DEAD_RELU_TOTAL = 0.99
# Saturation: fraction of a sigmoid/tanh layer's outputs within 0.01 of its asymptotes. DeepDiagnosis'
# threshold_layer and SageMaker Debugger's SaturatedActivation both flag a layer at half its units.
SATURATION_FRACTION = 0.5
# ... and, while training goes well, a hidden layer saturated from its first samples (its initialisation) that has
# not recovered this many steps later: most of its units pass no gradient, capacity the run pays for and cannot
# use. Own, measured: no hidden sigmoid/tanh layer of the 52 healthy corpus runs or the healthy demos passes 0.3
# at any sample; a layer started at 30x its default weights sits at 0.70-0.75 for its whole run.
SATURATION_INIT_FRACTION = 0.6
SATURATION_INIT_STEPS = 64

# ---- learning rate and updates -----------------------------------------------------------------------
# CS231n (Neural Networks Part 3, "ratio of weights:updates") puts a healthy ‖Δw‖/‖w‖ near 1e-3 per step.
# Too high: two orders of magnitude above it (measured: the lr=3 demo shows 0.5; healthy demos reach 0.3 in
# their first steps, which is why this is gated on the loss diverging or stuck).
LR_HIGH_RATIO = 0.1
# ... or, milder: the run learned, then lost it: the smoothed loss is back above where it started and at least this
# multiple of its best, while steps are still at least LR_REGRESS_RATIO of the weights (ten times CS231n's 1e-3).
# Own, measured: SGD with momentum at 6x a good rate (the mild demo) goes from 0.85 back to 1.39 with updates
# of 3-9%; healthy demos never rise 1.5x above their best (warm restarts and noisy batches: tens of percent).
LR_REGRESS_FACTOR = 1.5
LR_REGRESS_RATIO = 0.01
# Too low: every layer's update below 1e-4 of its weights, an order of magnitude under the heuristic
# (measured: the lr=1e-6 demo shows 7e-7; a dead-ReLU model still updates its output layer at 7e-4).
# SageMaker Debugger's WeightUpdateRatio small_threshold (1e-8) only catches updates that are all but zero.
LR_LOW_RATIO = 1e-4
# Learning rate exactly zero for this many consecutive steps (own: a warm-up from zero leaves zero after one step).
LR_ZERO_STEPS = 10
# Weights unchanged: update ratio exactly zero in this many consecutive samples (own).
UNCHANGED_SAMPLES = 3
# ... spanning at least this many steps (own): three samples are three steps when every step is sampled and 32 at
# every 16th, and a run a too-high rate is breaking stops moving for a few steps (its dead units, then NaN) before
# its loss shows it: judged over steps, the verdict does not depend on the cadence.
UNCHANGED_STEPS = 24
# No optimizer step: this many training loss calls with no optimizer step after them (own: gradient
# accumulation over more micro-batches than this is rare).
NO_STEP_CALLS = 32

# ---- inputs ------------------------------------------------------------------------------------------
# Unnormalised: the inputs' standard deviation or mean magnitude is at least this (own: a standardised input
# has std 1 and UMLAUT's check for values outside [-1, 1] flags healthy standardised data; raw 8-bit pixels have
# a std of 50-80 and a mean near 120; the healthy CNN demo's noisy images have std 8).
UNNORMALIZED_SCALE = 20.0
# Feature scales: largest / smallest per-feature mean magnitude of at least three orders of magnitude ...
FEATURE_SCALE_RATIO = 1e3
# ... while the largest features are themselves large (own: sparse 0/1 features give big ratios at small values).
FEATURE_SCALE_MIN_ABSMAX = 10.0
# Constant features: this fraction of input features does not vary across the batch (own: MNIST's blank
# border is about a fifth of its pixels).
CONST_FEATURES_FRACTION = 0.5

# ---- labels and classes ------------------------------------------------------------------------------
# Class imbalance: largest to smallest class count. SageMaker Debugger's ClassImbalance threshold_imbalance.
IMBALANCE_RATIO = 10.0
# ... and when the majority alone is this share of the samples, the message says that accuracy no longer
# tells learning from guessing (a model always answering it is right this often) (own).
IMBALANCE_MAJORITY_WARN = 0.9
# Samples needed per class before the class counts are trusted (own).
IMBALANCE_MIN_PER_CLASS = 20
# Unshuffled: the typical batch's top class share is at least halfway from the data's majority share to 1.0
# (own: shuffled batches of 64 from 4 balanced classes show 0.3-0.4; sorted ones 1.0) ...
UNSHUFFLED_EXCESS = 0.5
UNSHUFFLED_MIN_SAMPLES = 4
# ... or, with many classes, far above what shuffled batches of that size show: the majority share plus this many
# standard errors of a class's share in one batch, plus UNSHUFFLED_SLACK (own: the largest of 10 class shares in a
# shuffled batch of 64 is about 2 standard errors above 0.1; batches holding 2 of 10 classes show 0.5).
UNSHUFFLED_SIGMAS = 4.0
UNSHUFFLED_SLACK = 0.05
# ... or the typical batch holds at most this fraction of the distinct classes a random batch of its size would
# (expected from the class counts seen, at least 3). Own: class counts of unshuffled data are skewed toward the
# first classes, which lowers the expectation, so this errs quiet; batches of 2 of 10 classes expect about 6.
UNSHUFFLED_DISTINCT_FRACTION = 0.5
# Single class: the model's top predicted class takes at least this share of the batch (own), and at least
# halfway from the majority share to 1.0.
SINGLE_CLASS_FRACTION = 0.95
# Skewed classes: with a majority this large, accuracy at its share means the model answers it every time
# (own: for balanced classes accuracy at chance says nothing about which classes are predicted).
SKEWED_MAJORITY = 0.75
# Regression loss on class ids: integer targets 0..K-1 with at least this many values (own: 0/1 targets under
# MSE are a Brier-score classifier, which trains; three or more ids impose an order on the classes).
CLASS_ID_MIN_VALUES = 3
CLASS_ID_MAX_VALUES = 1000

# ---- accuracy ----------------------------------------------------------------------------------------
# Accuracy counts as zero below this (own), and below a quarter of chance for many classes.
ZERO_ACC = 0.01
# Flat: accuracy moved less than this since the start. AUTOTRAINER's delta (0.01) for slow convergence.
FLAT_ACC_DELTA = 0.01
# ... only for an accuracy under halfway from chance to perfect (own: a model fine-tuned from a good start is
# flat at a high accuracy, and healthy).
FLAT_ACC_LOW = 0.5

# ---- validation --------------------------------------------------------------------------------------
# Overfitting: validation loss this fraction above its best, in the last two evaluations, while the training
# loss kept falling by at least OVERFIT_TRAIN_DROP. Own, measured: healthy demos' validation loss wanders 5%
# around its best after converging; the val-plateau demo rises 13% with its training loss down 19%; the
# overfitting demo is 20% up two evaluations after its best. SageMaker's Overfit (gap between validation and
# training loss above 10% of the training loss) flags every healthy demo, whose gap is 50%.
OVERFIT_RISE = 0.20
OVERFIT_TRAIN_DROP = 0.10
# Persistence and size (issue 15): a validation loss that bumps 20-40% for one or two evaluations (a OneCycle
# schedule, SGD with clipping) and comes back is noise, not overfitting. The last OVERFIT_PERSIST evaluations
# must all be above the best; the rise above the best must exceed OVERFIT_NOISE times the typical change
# between consecutive evaluations (the curve's own noise); for a classification loss it must be at least
# OVERFIT_ABS_FLOOR nats (0.013 -> 0.018 at 99.7% accuracy is a 38% rise of nothing); and where accuracies are
# measured the train/validation gap must be at least OVERFIT_ACC_GAP. Own choices.
OVERFIT_PERSIST = 3
OVERFIT_NOISE = 2.0
OVERFIT_ABS_FLOOR = 0.02
OVERFIT_ACC_GAP = 0.03
# Stagnation: no improvement larger than this relative amount in this many evaluations: the defaults of
# PyTorch's ReduceLROnPlateau (patience=10, threshold=1e-4, threshold_mode="rel") and Keras' (patience=10,
# min_delta=1e-4).
STAGNATION_EVALS = 10
STAGNATION_MIN_DELTA = 1e-4
# A plateau whose last validation loss is this far above its best is drifting up (warning), not merely flat
# (info). Own, measured: converged validation losses wander within 1% (numpy_softmax demo: 0.1%); the
# val-plateau demo is 5% up ten evaluations after its best and 13% up at the end.
STAGNATION_DRIFT = 0.05
# A plateau is only a plateau after learning: the best validation loss is this much below the first (own).
STAGNATION_LEARNED = 0.05

# ---- alerts ------------------------------------------------------------------------------------------
# An active alert is sent again when its strength moves by this factor (or its severity changes), not every step.
UPDATE_FACTOR = 2.0

# ---- the machine: step timing and memory (system.py) ---------------------------------------------------
# Steps skipped before timing and memory are judged (own: DataLoader workers start, cuDNN autotunes, the
# caching allocator grows its pools, torch.compile compiles; all of that is over within tens of steps).
SYSTEM_WARMUP_STEPS = 50
# input_bound: over the last INPUT_BOUND_STEPS steps, the median step spends at least this share waiting for its
# batch, at least INPUT_BOUND_MIN_WAIT_S of it, and the window covers INPUT_BOUND_MIN_SECONDS of steps. Own: "most of a
# step" (the issue's words) is half; a median, not a sum, so one long wait (workers restarting at an epoch's
# start, a checkpoint) does not make a run input-bound; below 10 ms of waiting there is little to gain.
INPUT_BOUND_STEPS = 64
INPUT_BOUND_FRACTION = 0.5
INPUT_BOUND_MIN_WAIT_S = 0.010
INPUT_BOUND_MIN_SECONDS = 1.0
# throughput_drop: the median step of the last THROUGHPUT_RECENT_STEPS is this many times the median of up to
# THROUGHPUT_NORM_STEPS before them, and both spans cover minutes of wall time. Own: a GPU that throttles loses
# 30-50 % (NVIDIA's clocks-event reasons), swapping or a shared GPU halves the rate or worse; a factor of two
# sustained over a minute is past the noise of a busy machine's seconds.
THROUGHPUT_RECENT_STEPS = 128
THROUGHPUT_NORM_STEPS = 1024
THROUGHPUT_DROP_FACTOR = 2.0
THROUGHPUT_MIN_SECONDS = 30.0
# memory_growth: over the last MEMORY_GROWTH_WINDOW samples (at least MEMORY_GROWTH_MIN_SAMPLES spanning
# MEMORY_GROWTH_MIN_STEPS steps), every quarter's median above the last, and the growth at least
# MEMORY_GROWTH_MIN_BYTES and MEMORY_GROWTH_MIN_FRACTION of where it started. Own: a graph kept alive by
# `total_loss += loss` adds the step's activations each step (megabytes for small models); allocator pools and
# Python's arenas grow once and stop; 64 MB is above the noise of a CPU process's RSS.
MEMORY_GROWTH_WINDOW = 64
MEMORY_GROWTH_MIN_SAMPLES = 8
MEMORY_GROWTH_MIN_STEPS = 100
MEMORY_GROWTH_MIN_BYTES = 64 * 1024 * 1024
MEMORY_GROWTH_MIN_FRACTION = 0.10
# near_oom: PyTorch's reserved memory on a device at this share of its total. Own: the caching allocator rounds
# blocks up and fragments; within 5 % of the total, one batch longer than the others fails to allocate.
NEAR_OOM_FRACTION = 0.95
