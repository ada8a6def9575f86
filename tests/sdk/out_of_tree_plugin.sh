#!/usr/bin/env bash
# Installs mq from the build tree, builds examples/plugin against the installed SDK
# (find_package(MonoQuant)), and runs the installed mq-pipeline on a recipe that loads
# that plugin from its plugins.paths.
# usage: out_of_tree_plugin.sh BUILD_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
build=$1 source=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
cmake -S "$source/examples/plugin" -B "$work/plugin" -G Ninja \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
cmake --build "$work/plugin" > "$work/build.log"
for plugin in observer_absmax quantizer_nearest format_tpkl validator_finite; do
  test -f "$work/plugin/mq_$plugin.so"
done

cp "$source/configs/models/mlp.safetensors" "$work/mlp.safetensors"
cat > "$work/recipe.yaml" <<YAML
version: 1
model: {path: mlp.safetensors}
quantizer: {plugin: dynamic}
format: {plugin: safetensors, output: out/mlp.int8.safetensors}
validators:
  - {plugin: finite}
  - {plugin: size, options: {min_ratio: 3}}
plugins: {paths: [plugin]}
YAML
unset MQ_PLUGIN_PATH
"$work/prefix/bin/mq-pipeline" run "$work/recipe.yaml" --json --quiet > "$work/report.json"
grep -q '"plugin": "finite"' "$work/report.json"
grep -q '"message": "all values finite"' "$work/report.json"
test -f "$work/out/mlp.int8.safetensors"
# The installed binary finds its built-in plugins beside the installed libmq.
"$work/prefix/bin/mq-pipeline" plugins --plugin-path "$work/plugin" > "$work/plugins.txt"
grep -q "$work/prefix/lib/mono-quant/plugins" "$work/plugins.txt"
# Every skeleton in one recipe: absmax observes the weights nearest quantizes, tpkl
# writes them and reads them back for sqnr and load_run, finite checks them.
cat > "$work/skeletons.yaml" <<YAML
version: 1
model: {path: mlp.safetensors}
observer: {plugin: absmax}
quantizer: {plugin: nearest, options: {dtype: int8, granularity: per_channel}}
format: {plugin: tpkl, output: out/mlp.int8.tpkl}
validators:
  - {plugin: finite}
  - {plugin: sqnr, options: {min_db: 30}}
  - {plugin: load_run}
  - {plugin: size, options: {min_ratio: 2}}
plugins: {paths: [plugin]}
YAML
"$work/prefix/bin/mq-pipeline" run "$work/skeletons.yaml" --json --quiet > "$work/skeletons.json"
grep -q '"status": 0' "$work/skeletons.json"
test -f "$work/out/mlp.int8.tpkl"
"$work/prefix/bin/mq-pipeline" inspect "$work/out/mlp.int8.tpkl" --plugin-path "$work/plugin" > "$work/inspect.txt"
grep -q "fc1.weight .*int8 per_channel(axis=0) symmetric" "$work/inspect.txt"
echo "ok: out-of-tree plugins of every kind built against the installed SDK and run"
