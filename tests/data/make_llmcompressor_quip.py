"""Makes tests/data/llmcompressor_quip/: what llm-compressor itself writes for QuIP input
rotations + W8A8 (`QuIPModifier(rotations=["v"], transform_type="hadamard",
transform_block_size=32)` then `QuantizationModifier(scheme="W8A8")`) on a tiny Llama with
an outlier channel in every norm, and llmcompressor_quip_reference.safetensors: token ids
and the float model's logits on them (the folder's accuracy is judged against these, so
the test does not depend on how a transformers version initialises a model).

Run in an environment with llm-compressor (measured with llmcompressor 0.14.0.1,
compressed-tensors 0.19.0, transformers 5.17.0, torch 2.14.0):
    python tests/data/make_llmcompressor_quip.py tests/data
"""

import os
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
import transformers
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier
from llmcompressor.modifiers.transform import QuIPModifier
from safetensors.torch import save_file

out = sys.argv[1]
config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
torch.manual_seed(3)
model = transformers.LlamaForCausalLM(config).eval()
with torch.no_grad():
    for layer in model.model.layers:
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight.uniform_(0.5, 1.5)
            norm.weight[5] = 30.0
ids = torch.randint(0, 128, (1, 48), generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    logits = model(ids).logits.float()
save_file({"ids": ids, "logits": logits.contiguous()}, os.path.join(out, "llmcompressor_quip_reference.safetensors"))
float_folder = tempfile.mkdtemp()  # oneshot, and the save after it, want a model that has a folder
model.save_pretrained(float_folder)
model = transformers.AutoModelForCausalLM.from_pretrained(float_folder, dtype=torch.float32)
recipe = [QuIPModifier(rotations=["v"], transform_type="hadamard", transform_block_size=32, ignore="lm_head"),
          QuantizationModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"])]
oneshot(model=model, recipe=recipe)
model.save_pretrained(os.path.join(out, "llmcompressor_quip"), save_compressed=True)
