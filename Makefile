# Sim-MPNet: environment, tests and a CPU demo on the synthetic (phantom) Synapse set.
#   make venv   create .venv and install requirements.txt (once; again only when requirements.txt changes)
#   make test   lint (ruff) and run the test suite in .venv
#   make lint   ruff over the tree (configuration in pyproject.toml)
#   make demo   phantom data -> short CPU training (runs/demo) -> test (runs/demo/test) -> DSC/HD95 table
#   make demo-unet   the same data, recipe and epochs with the smp U-Net baseline (runs/demo_unet)
#   make demo-matchseg   phantom BUSI set -> short CPU training of MatchSeg with HOG-selected supports -> test
#   make bench-cpu / bench-gpu   the rows of docs/performance.md's tables -> benchmarks/results/<tag>_*.json
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.requirements-installed

PHANTOM := data/phantom
PHANTOM_SYNAPSE := $(PHANTOM)/Synapse
PHANTOM_LISTS := $(PHANTOM)/lists/lists_Synapse
# 12 synthetic training CTs (the generator's default is 6): more variety for the same number of steps.
PHANTOM_TRAIN_CASES := 12
PHANTOM_STAMP := $(PHANTOM)/.synapse-$(PHANTOM_TRAIN_CASES)-train-cases
DEMO_DIR := runs/demo
# Small CPU configuration (3 min 24 s on 2 idle cores, 2026-12-04): pico backbone at 64x64 from random init, short memory
# warm-up, small memory pool, W-LD from epoch 5; 16 epochs of 36 steps at a constant lr of 5e-4.
DEMO_MODEL := --scale pico --img_size 64 --img_size_s2 64 --pool_size 16 --warmup_iters 20 --pretrained none \
	--wld_start_epoch 5
DEMO_TRAIN := --max_epochs 16 --batch_size 8 --base_lr 5e-4 --num_workers 1
DEMO_VOLUMES := --volume_path $(PHANTOM_SYNAPSE)/test_vol_h5 --list_dir $(PHANTOM_LISTS)
DEMO_UNET_DIR := runs/demo_unet
# The baseline at the demo's input size, random init like the demo's Sim-MPNet.
DEMO_UNET_MODEL := --model unet --img_size 64 --pretrained none

# MatchSeg demo: a BUSI-like phantom (48 train, 8 val, 24 test images at 64 px); MatchSeg at widths 32 (the paper's
# layout, narrower for the CPU), k = 4 HOG-selected supports per query, 20 epochs of 6 steps at lr 1e-3; the
# checkpoint with the best validation DSC is tested, with its supports from the training split.
PHANTOM_BUSI := $(PHANTOM)/BUSI
PHANTOM_BUSI_LISTS := $(PHANTOM)/lists/lists_BUSI
PHANTOM_BUSI_COUNTS := --num_train 48 --num_valid 8 --num_test 24 --size 64
PHANTOM_BUSI_STAMP := $(PHANTOM)/.busi-48-8-24-64
DEMO_MATCHSEG_DIR := runs/demo_matchseg
DEMO_MATCHSEG_DATA := --volume_path $(PHANTOM_BUSI) --list_dir $(PHANTOM_BUSI_LISTS)
DEMO_MATCHSEG_MODEL := --model matchseg --img_size 64 --widths 32 32 32 32 --pretrained none \
	--support_size 4 --support_selection hog --support_cache $(DEMO_MATCHSEG_DIR)/support_cache
DEMO_MATCHSEG_TRAIN := --max_epochs 20 --batch_size 8 --base_lr 1e-3 --num_workers 1

# Performance tables (docs/performance.md): fast vs reference, one JSON report per row. An otherwise idle machine;
# the tag names the machine in the file names (cpu2: this project's 2-core machine; h100: the lent GPU).
BENCH := $(PY) benchmarks/bench_model.py
BENCH_MATCHSEG := $(PY) benchmarks/bench_matchseg.py
BENCH_RESULTS := benchmarks/results
CPU_TAG ?= cpu2
GPU_TAG ?= gpu
# The paper's training configuration on a GPU: small 256/224, Synapse constants, batch 20, bf16.
BENCH_GPU_MODEL := --what model --scale small --img_size 256 --batch 20 --amp bf16 --device cuda --repeats 5 --warmup 2

.PHONY: venv lint test demo demo-unet demo-matchseg bench-cpu bench-gpu

$(VENV_STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	touch $@

venv: $(VENV_STAMP)

lint: $(VENV_STAMP)
	$(PY) -m ruff check .

# One pytest worker per core, each taking whole test modules (--dist loadscope), so a module's expensive fixtures
# (trained phantom runs, extracted old commits) are built once; tests/conftest.py gives each worker one thread per
# core it owns (OMP_NUM_THREADS), since two full thread pools on 2 cores made the suite 1.8x slower.
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=20

$(PHANTOM_STAMP): | $(VENV_STAMP)
	$(PY) -m datasets.phantoms --dataset synapse --out $(PHANTOM) --num_train $(PHANTOM_TRAIN_CASES)
	touch $@

demo: $(VENV_STAMP) $(PHANTOM_STAMP)
	$(PY) train_synapse.py --root_path $(PHANTOM_SYNAPSE)/train_npz $(DEMO_VOLUMES) $(DEMO_MODEL) $(DEMO_TRAIN) \
		--device cpu --output_dir $(DEMO_DIR) --resume auto
	$(PY) test_synapse.py $(DEMO_VOLUMES) --checkpoint $(DEMO_DIR)/last.pth --output_dir $(DEMO_DIR)/test \
		--device cpu --save-overlays 2

demo-unet: $(VENV_STAMP) $(PHANTOM_STAMP)
	$(PY) train.py --dataset synapse --root_path $(PHANTOM_SYNAPSE)/train_npz $(DEMO_VOLUMES) $(DEMO_UNET_MODEL) \
		$(DEMO_TRAIN) --device cpu --output_dir $(DEMO_UNET_DIR) --resume auto
	$(PY) test.py --dataset synapse $(DEMO_VOLUMES) --checkpoint $(DEMO_UNET_DIR)/last.pth \
		--output_dir $(DEMO_UNET_DIR)/test --device cpu

$(PHANTOM_BUSI_STAMP): | $(VENV_STAMP)
	$(PY) -m datasets.phantoms --dataset busi --out $(PHANTOM) $(PHANTOM_BUSI_COUNTS)
	touch $@

demo-matchseg: $(VENV_STAMP) $(PHANTOM_BUSI_STAMP)
	$(PY) train.py --dataset busi --root_path $(PHANTOM_BUSI) $(DEMO_MATCHSEG_DATA) $(DEMO_MATCHSEG_MODEL) \
		$(DEMO_MATCHSEG_TRAIN) --device cpu --output_dir $(DEMO_MATCHSEG_DIR) --resume auto
	$(PY) test.py --dataset busi $(DEMO_MATCHSEG_DATA) --checkpoint $(DEMO_MATCHSEG_DIR)/best_val.pth \
		--output_dir $(DEMO_MATCHSEG_DIR)/test --device cpu --save-overlays 1

bench-cpu: $(VENV_STAMP)
	$(BENCH) --what dmwla --batch 4 --threads 2 --repeats 9 --warmup 2 --device cpu \
		--json $(BENCH_RESULTS)/$(CPU_TAG)_dmwla_b4.json
	$(BENCH) --what model --scale small --img_size 256 --batch 2 --threads 2 --repeats 5 --device cpu \
		--json $(BENCH_RESULTS)/$(CPU_TAG)_model_small_b2.json
	$(BENCH) --what volume --threads 2 --repeats 1 --warmup 0 --device cpu \
		--json $(BENCH_RESULTS)/$(CPU_TAG)_volume_100x512.json
	$(BENCH_MATCHSEG) --device cpu --threads 2 --img_size 128 --shots 8 --batch 2 --repeats 3 \
		--json $(BENCH_RESULTS)/$(CPU_TAG)_matchseg_128_k8_b2.json

bench-gpu: $(VENV_STAMP)
	$(BENCH) $(BENCH_GPU_MODEL) --json $(BENCH_RESULTS)/$(GPU_TAG)_model_small_b20_bf16.json
	$(BENCH) $(BENCH_GPU_MODEL) --grad_checkpointing \
		--json $(BENCH_RESULTS)/$(GPU_TAG)_model_small_b20_bf16_grad_checkpointing.json
	$(BENCH) --what dmwla --batch 20 --amp bf16 --device cuda --repeats 5 --warmup 2 \
		--json $(BENCH_RESULTS)/$(GPU_TAG)_dmwla_b20_bf16.json
	$(BENCH) --what volume --amp bf16 --device cuda --repeats 1 --warmup 0 \
		--json $(BENCH_RESULTS)/$(GPU_TAG)_volume_100x512_bf16.json
	$(BENCH_MATCHSEG) --device cuda --img_size 128 --shots 8 --batch 32 --amp bf16 --repeats 5 --warmup 2 \
		--json $(BENCH_RESULTS)/$(GPU_TAG)_matchseg_128_k8_b32_bf16.json
