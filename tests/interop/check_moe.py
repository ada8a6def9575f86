#!/usr/bin/env python3
"""The llama architecture's Mixtral (sparse mixture of experts) against transformers (the
oracle): a tiny random MixtralForCausalLM (4 experts, top 2, GQA) saved with
save_pretrained; mq calibrates a static W8A8 recipe on token ids and every Linear's
input_scale must be what transformers' forward gives (absmax / 127.5) within 1e-4
relative: attention and router Linears from hooks on each nn.Linear, lm_head's too (so
the routed mixture of every block is transformers'), and each expert's from the MoE
block's input as if the router had sent the expert every token (mq's documented rule:
calibration reaches every expert). A dynamic recipe keeps the routers in float (vLLM
builds them unquantized).
usage: check_moe.py MQ_PIPELINE WORK_DIR (in the venv of tests/make_venv.sh)"""
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, MixtralConfig

import check_llama

EXPERTS = 4


def main(exe, work):
    os.makedirs(work, exist_ok=True)
    directory = os.path.join(work, "mixtral")
    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                           num_local_experts=EXPERTS, num_experts_per_tok=2, attn_implementation="eager")
    check_llama.save_random_model(config, directory, torch.float32)
    model = AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    batches = [torch.randint(0, 96, (2, 11)) for _ in range(3)]
    calibration = os.path.join(work, "ids.safetensors")
    save_file({f"b{i}": b for i, b in enumerate(batches)}, calibration)

    absmax = {}

    def keep(name, value):
        absmax[name] = max(absmax.get(name, 0.0), value)

    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".experts." not in name:
            hooks.append(module.register_forward_hook(
                lambda m, inputs, output, name=name: keep(name, inputs[0].abs().max().item())))
        if name.endswith("block_sparse_moe"):
            def every_expert(m, inputs, output, name=name):
                x = inputs[0].reshape(-1, inputs[0].shape[-1])
                for e, expert in enumerate(m.experts):
                    keep(f"{name}.experts.{e}.w1", x.abs().max().item())
                    keep(f"{name}.experts.{e}.w3", x.abs().max().item())
                    keep(f"{name}.experts.{e}.w2", (F.silu(expert.w1(x)) * expert.w3(x)).abs().max().item())
            hooks.append(module.register_forward_hook(every_expert))
    with torch.no_grad():
        for ids in batches:
            model(ids)
    for h in hooks:
        h.remove()
    assert len(absmax) == config.num_hidden_layers * (5 + 3 * EXPERTS) + 1, sorted(absmax)

    out = os.path.join(work, "w8a8")
    recipe = os.path.join(work, "w8a8.yaml")
    with open(recipe, "w") as f:
        f.write(f"""version: 1
model: {{path: {directory}}}
calibration: {{path: {calibration}}}
quantizer: {{plugin: static, options: {{dtype: int8, layers: {{replace: true}}}}}}
format: {{plugin: safetensors, output: {out}}}
validators: []
""")
    subprocess.run([exe, "run", "--quiet", recipe], check=True)
    scales = load_file(os.path.join(out, "model.safetensors"))
    worst = 0.0
    for layer, value in absmax.items():
        want = value / 127.5
        got = scales[layer + ".input_scale"].item()
        worst = max(worst, abs(got - want) / want)
        assert abs(got - want) <= 1e-4 * want, (layer, got, want)
    print(f"mixtral: {len(absmax)} Linear inputs as transformers computes them, every expert on every token "
          f"(worst {worst:.1e} relative)")

    # The default skip set keeps each router in float.
    dynamic = os.path.join(work, "dynamic.json")
    subprocess.run([exe, "run", "--quiet", "--dry-run", "--json", recipe, "--set", "quantizer.plugin=dynamic",
                    "--set", "quantizer.options={dtype: int8}"], check=True, stdout=open(dynamic, "w"))
    with open(dynamic) as f:
        rows = {row["tensor"]: row for row in json.load(f)["layers"]}
    for i in range(config.num_hidden_layers):
        router = rows[f"model.layers.{i}.block_sparse_moe.gate.weight"]
        assert router["spec"] is None and router["rule"] == "default skip: MoE router", router
        assert rows[f"model.layers.{i}.block_sparse_moe.experts.3.w2.weight"]["spec"] is not None
    print("ok: routers stay in float by default; experts are quantized")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
