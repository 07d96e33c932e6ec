"""Run machinery: the stages and their artefacts, executing notebooks, atomic files, seeds and
manifests, fold executors, progress lines, publishing."""
