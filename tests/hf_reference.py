"""Reference checkpoints and outputs from Hugging Face `transformers` (PyTorch, CPU).

Runs under a separate Python (3.11) that has torch, transformers and tokenizers; the
parity tests (tests/test_hf_import.py) call it once per session through TTC_HF_REF_PYTHON:

  $TTC_HF_REF_PYTHON tests/hf_reference.py OUT_DIR

For each family it writes OUT_DIR/<family>/ with a tiny random-initialised checkpoint
(save_pretrained: config.json + model.safetensors, sharded for one family), a tokenizer.json
built offline with `tokenizers`, and ref.npz:
  tokens_T       [T] int32 ids of one text (BOS first)
  logits_TxV     [T, V] float32 logits of the model on tokens_T
  prompt_P       [P] int32 ids of a prompt (BOS first)
  greedy_N       [32] int32 greedy continuation (model.generate, do_sample=False, no EOS stop)
Nothing is downloaded: every model and tokenizer is built here from a config and a seed.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import tokenizers
import torch
import transformers

_CORPUS = [
    'Q: What is 12 + 35?\nStep 1: 12 + 35 = 47.\nThe answer is 47.\n',
    'Solve x^2 - 5x + 6 = 0.\nFactor: (x - 2)(x - 3) = 0.\nSo x = 2 or x = 3.\n',
    'The area of a circle of radius r is \\pi r^2.\n\\boxed{\\frac{1}{2}}\n',
    'Natalia sold 48 clips in April, and half as many in May.\n#### 72\n',
]
_TEXT = 'Solve x + 3 = 12.\nStep 1: x = 12 - 3 = 9.\nThe answer is \\boxed{9}.\n'
_PROMPT = 'Q: What is 7 + 5?\n'
_NEW_TOKENS = 32


def build_tokenizer(specials: tuple[str, str, str]) -> tokenizers.Tokenizer:
  """A byte-level BPE (as Llama-3 and Qwen2 use) trained on a tiny corpus; deterministic."""
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=160, special_tokens=list(specials), show_progress=False,
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(_CORPUS, trainer)
  return tok


def _perturb(model: torch.nn.Module, offset_norms: bool, weight_std: float = 0.15) -> None:
  """Replaces the default init (zero biases, unit norms) by random values, so that biases,
  norm weights and every projection are exercised by the comparison."""
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      if 'norm' in name:
        p.copy_((0.0 if offset_norms else 1.0) + 0.2 * noise)
      else:
        p.copy_((0.15 if "embed" in name else weight_std) * noise)


def _families():
  common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                num_attention_heads=4, max_position_embeddings=128,
                attn_implementation='eager')
  return {
      # Llama-3: GQA 4:2, untied, rope_scaling type llama3 with a short original context so
      # all three frequency bands (kept, smoothed, divided) occur at head_dim 16.
      'llama3': (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
          common, num_key_value_heads=2, head_dim=16, rope_theta=500000.0,
          rope_scaling={'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0,
                        'high_freq_factor': 4.0, 'original_max_position_embeddings': 64},
          tie_word_embeddings=False, rms_norm_eps=1e-5),
       ('<|begin_of_text|>', '<|end_of_text|>', '<|finetune_right_pad_id|>'), False, 1),
      # Qwen2/2.5: qkv bias, GQA 4:1, tied (as the small Qwen2.5 models); saved in 2 shards.
      'qwen2': (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(
          common, num_key_value_heads=1, rope_theta=1000000.0, tie_word_embeddings=True,
          rms_norm_eps=1e-6),
       ('<|im_start|>', '<|endoftext|>', '<|pad|>'), False, 2),
      # Gemma: (1 + w) norms, sqrt(d) embedding scale, gelu-tanh, head_dim 32 != 48 / 2.
      'gemma': (transformers.GemmaConfig, transformers.GemmaForCausalLM, dict(
          common, hidden_size=48, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
          hidden_act='gelu_pytorch_tanh', rms_norm_eps=1e-6),
       ('<bos>', '<eos>', '<pad>'), True, 1),
      # Gemma-2: soft-capping (small caps so tanh is far from linear), post norms,
      # query_pre_attn_scalar != head_dim, alternating sliding-window layers (window 8 < the
      # sequence lengths used), GQA 4:2.
      'gemma2': (transformers.Gemma2Config, transformers.Gemma2ForCausalLM, dict(
          common, num_hidden_layers=4, num_key_value_heads=2, head_dim=16,
          query_pre_attn_scalar=24, attn_logit_softcapping=2.0, final_logit_softcapping=10.0,
          sliding_window=8, hidden_activation='gelu_pytorch_tanh', rms_norm_eps=1e-6),
       ('<bos>', '<eos>', '<pad>'), True, 1),
  }


def build(family: str, out: pathlib.Path) -> None:
  config_cls, model_cls, kw, specials, offset_norms, shards = _families()[family]
  out.mkdir(parents=True, exist_ok=True)
  tok = build_tokenizer(specials)
  tok.save(str(out / 'tokenizer.json'))
  bos, eos, pad = (tok.token_to_id(s) for s in specials)
  (out / 'tokenizer_config.json').write_text(json.dumps(
      {'bos_token': specials[0], 'eos_token': specials[1], 'pad_token': specials[2]}))
  torch.manual_seed(0)
  cfg = config_cls(vocab_size=tok.get_vocab_size(), bos_token_id=bos, eos_token_id=eos,
                   pad_token_id=pad, **kw)
  model = model_cls(cfg).eval()
  _perturb(model, offset_norms, 0.5 if offset_norms else 0.15)
  size = sum(p.numel() * 4 for p in model.parameters())
  model.save_pretrained(str(out), safe_serialization=True,
                        max_shard_size=f'{size // shards // 1000 + 1}KB' if shards > 1
                        else '10GB')
  tokens = [bos] + tok.encode(_TEXT).ids
  prompt = [bos] + tok.encode(_PROMPT).ids
  with torch.no_grad():
    logits = model(torch.tensor([tokens])).logits[0].float().numpy()
    gen_cfg = transformers.GenerationConfig(
        do_sample=False, max_new_tokens=_NEW_TOKENS, min_new_tokens=0, eos_token_id=None,
        pad_token_id=pad, bos_token_id=bos)
    ids = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                         dtype=torch.long), generation_config=gen_cfg)
  greedy = ids[0, len(prompt):].numpy()
  assert len(greedy) == _NEW_TOKENS, (family, len(greedy))
  np.savez(out / 'ref.npz', tokens_T=np.asarray(tokens, np.int32), logits_TxV=logits,
           prompt_P=np.asarray(prompt, np.int32), greedy_N=greedy.astype(np.int32))


def main(argv):
  out = pathlib.Path(argv[1])
  families = argv[2:] or list(_families())
  for f in families:
    build(f, out / f)
  (out / 'versions.json').write_text(json.dumps(
      {'torch': torch.__version__, 'transformers': transformers.__version__,
       'tokenizers': tokenizers.__version__}))
  print('wrote', ', '.join(families), 'to', out)


if __name__ == '__main__':
  main(sys.argv)
