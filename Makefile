# kdkeras: every target builds and uses the project virtualenv on its own,
# so a fresh clone needs nothing but `make test` or `make all`.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kdkeras-installed
# medmnist's wheel hard-requires torch; kdkeras only reads its INFO table and npz
# files, so it is installed outside the resolver (see README, "Installing").
MEDMNIST ?= medmnist==3.0.2

.PHONY: install test test-shuffled teacher student distill report all models sweep clean

# The workflow: `make all`, or one phase at a time, on experiments/$(EXP).toml.
# Overrides: make distill EXP=quickstart EPOCHS=3 TEMPERATURE=6 ALPHA=0.5 LIMIT=500
# (also LR, BATCH_SIZE, SEED, LOSS=decoupled_kd, STRATEGY=mirrored)
EXP     ?= quickstart
RUNS    ?= runs
KDKERAS := $(VENV)/bin/kdkeras
# ALPHA, TEMPERATURE and LOSS reach only the phases that distil (`kdkeras teacher` has no --alpha).
PHASE_ARGS = --config $(EXP) --runs-dir $(RUNS) \
	$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(LR),--learning-rate $(LR)) \
	$(if $(BATCH_SIZE),--batch-size $(BATCH_SIZE)) $(if $(LIMIT),--limit $(LIMIT)) \
	$(if $(SEED),--seed $(SEED)) $(if $(STRATEGY),--strategy $(STRATEGY)) \
	$(if $(filter distill sweep,$@),$(if $(ALPHA),--alpha $(ALPHA)) $(if $(TEMPERATURE),--temperature \
	$(TEMPERATURE)) $(if $(LOSS),--loss $(LOSS)))

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps '$(MEDMNIST)'
	touch $@

# Two workers by default (CI and Colab have 2 cores), each taking whole files so a module's
# fixture (a trained run, the mirrored checks) is built once; TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# The suite in a random order (pytest-randomly); its header prints the seed, and
# TEST_SEED=<seed> repeats an order. `make test` (and CI) keep file order: see README, Testing.
test-shuffled: install
	$(PY) -m pytest -p randomly $(if $(TEST_SEED),--randomly-seed=$(TEST_SEED)) tests

teacher student distill: install
	$(KDKERAS) $@ $(PHASE_ARGS)

# The report reloads the test split with the [data] settings each run recorded in
# runs/$(EXP)/<model>_config.toml (LIMIT included), so it takes no overrides.
report: install
	$(KDKERAS) report --config $(EXP) --runs-dir $(RUNS)

all: teacher student distill report

# Distils the trained teacher (make teacher) at every point of a T x alpha grid:
# make sweep EXP=quickstart TEMPERATURES="2 4 8" ALPHAS="0.1 0.5" EPOCHS=3
sweep: install
	$(KDKERAS) sweep $(PHASE_ARGS) $(if $(TEMPERATURES),--temperatures "$(TEMPERATURES)") \
		$(if $(ALPHAS),--alphas "$(ALPHAS)")

models: install
	$(KDKERAS) models

clean:
	rm -rf $(VENV) build *.egg-info

# Exports a saved student to SavedModel and TFLite (float32, dynamic-range int8, full int8)
# with a size / latency / accuracy table; default model: $(RUNS)/$(EXP)/distilled.keras.
# make export EXP=quickstart MODEL=runs/quickstart/student.keras FORMATS="tflite_float32 tflite_int8"
.PHONY: export bench
export: install
	$(KDKERAS) export --config $(EXP) --runs-dir $(RUNS) $(if $(MODEL),--model $(MODEL)) \
		$(if $(FORMATS),--formats $(FORMATS))

# Regenerates BENCHMARKS.md and the README's quickstart result: training speed, accuracy over
# seeds, recipes, few labels through a transfer set, the capacity gap, multi-worker overhead, export
# of the first seed's distilled student (about 6.5 h on 2 CPU cores, most of it the recipes and the
# capacity gap; finished phases are reused on a rerun).
# make bench BENCH_SEEDS="0 1 2 3 4" BENCH_EPOCHS=12
BENCH_EXP   ?= quickstart
BENCH_SEEDS ?= 0 1 2 3 4
BENCH_RUNS  ?= runs/bench
bench: install
	$(PY) -m kdkeras.bench.speed --out-dir $(BENCH_RUNS)/speed
	$(PY) -m kdkeras.bench.accuracy --config $(BENCH_EXP) --seeds $(BENCH_SEEDS) --runs-dir $(BENCH_RUNS) \
		$(if $(BENCH_EPOCHS),--epochs $(BENCH_EPOCHS))
	$(PY) -m kdkeras.bench.recipes --config $(BENCH_EXP) --seeds $(BENCH_SEEDS) --runs-dir $(BENCH_RUNS)
	$(PY) -m kdkeras.bench.transfer --config $(BENCH_EXP) --seeds $(BENCH_SEEDS) --runs-dir $(BENCH_RUNS)
	$(PY) -m kdkeras.bench.gap --config $(BENCH_EXP) --seeds $(BENCH_SEEDS) --runs-dir $(BENCH_RUNS) \
		--figure docs/figures/capacity_gap.png --benchmarks BENCHMARKS.md
	$(PY) -m kdkeras.bench.determinism --config $(BENCH_EXP) --out-dir $(BENCH_RUNS)/determinism
	$(PY) -m kdkeras.data.benchmark --jpegs 300 --jpeg-size 1024 --image-size 224 --out $(BENCH_RUNS)/pipeline.md
	$(PY) -m kdkeras.bench.multiworker --out-dir $(BENCH_RUNS)/multiworker
	$(KDKERAS) report --config $(BENCH_EXP) --runs-dir $(BENCH_RUNS)/seed$(firstword $(BENCH_SEEDS))
	$(KDKERAS) export --config $(BENCH_EXP) --runs-dir $(BENCH_RUNS)/seed$(firstword $(BENCH_SEEDS)) \
		--out $(BENCH_RUNS)/export
	$(PY) -m kdkeras.bench.report --runs-dir $(BENCH_RUNS) --out BENCHMARKS.md --readme README.md
