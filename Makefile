# Developer shortcuts. Needs the docs extra: pip install -e ".[docs]"
#
# make docs: the HTML documentation, the API reference generated from the docstrings, in
# docs/_build/html. Every Sphinx warning is an error (-W; --keep-going lists them all), and
# -E rereads every source, so a build that failed cannot pass on a rerun from its cache.

PYTHON ?= python

.PHONY: docs

docs:
	$(PYTHON) -m sphinx -E -W --keep-going -b html docs docs/_build/html
