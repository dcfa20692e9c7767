"""Candidates/s of batched generation against one-prompt-at-a-time generation, in one run; and with
--backends, HF float32 generation against the faster CPU paths tried for the live chat.

    .venv/bin/python bench/generate.py [--prompts 16] [--k 2] [--max-new-tokens 64] [--model DIR]
    .venv/bin/python bench/generate.py --backends [--max-new-tokens 160] [--threads 2]

Both legs sample the same (prompt, K) rows with the same settings; the one-at-a-time leg calls the
same `generate_replies` with a batch size of 1, as a naive worker loop would. Runs are alternated
(one-at-a-time, batched, repeated) and the best of each is reported.

--backends runs, alternated and repeated, each path at batch 1, 2 (a chat turn: two replies) and 16,
greedy and sampled, on the same prompt and length (every reply runs to --max-new-tokens): tokens/s,
the time to the first new token, and the seconds of a two-reply chat turn. Paths: `hf` (HF generate,
float32: what the app uses), `hf-bf16` (the model in bfloat16), `hf-int8` (torch dynamic int8
quantisation of every linear layer but the output head, per-channel weights), and where
llama-cpp-python is installed (it is not in the requirements: pip builds it from source, about an
hour on this machine), `llama.cpp` on the bundled Q4_1 GGUF, whose dequantised weights are exactly
the float32 model's; its "batch 2" is two replies one after the other. Against `hf` it also
prints, for each reduced-precision path, on the prompts' float32 greedy replies: the mean per-token
KL(hf || path) of the next-token distributions and the share of greedy tokens that agree.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from training.checkpoints import load_causal_lm  # noqa: E402
from training.generate import GenerationConfig, generate_replies  # noqa: E402

PROMPTS_FILE = REPO_ROOT / "preference_app" / "core" / "builtin_prompts.jsonl"


def run(loaded, contexts, config):
    started = time.perf_counter()
    replies = generate_replies(loaded.model, loaded.tokenizer, contexts, config)
    seconds = time.perf_counter() - started
    flat = [reply for context_replies in replies for reply in context_replies]
    return {"seconds": seconds, "candidates": len(flat), "tokens": sum(reply.token_count for reply in flat)}


class HfPath:
    """A transformers model (float32, bfloat16 or int8): HF generate, every reply in one batch."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def timed(self, prompt_ids: torch.Tensor, *, batch: int, tokens: int, sampled: bool) -> dict:
        """One generate call of `batch` copies of the prompt, every reply exactly `tokens` long."""
        from transformers.generation.streamers import BaseStreamer

        class FirstToken(BaseStreamer):
            def __init__(self):
                self.calls, self.first = 0, None

            def put(self, value):
                self.calls += 1
                if self.calls == 2:  # The first call carries the prompt.
                    self.first = time.perf_counter()

            def end(self):
                pass

        ids = prompt_ids.repeat(batch, 1)
        streamer = FirstToken()
        torch.manual_seed(0)
        started = time.perf_counter()
        with torch.inference_mode():
            self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                min_new_tokens=tokens, do_sample=sampled, temperature=0.8 if sampled else None,
                                top_p=0.95 if sampled else None, top_k=None, pad_token_id=self.tokenizer.pad_token_id,
                                streamer=streamer)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "tokens_per_second": batch * tokens / seconds, "first_token": streamer.first - started}

    @torch.inference_mode()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """(T, vocab) next-token logits after each of `ids`' tokens."""
        return self.model(ids).logits[0].float()


def reduced_precision_paths(model, tokenizer) -> dict[str, HfPath]:
    """The HF paths tried beside float32, each on a copy of `model`."""
    import copy
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    int8 = copy.deepcopy(model)
    spec = {name: per_channel_dynamic_qconfig for name, module in int8.named_modules()
            if isinstance(module, torch.nn.Linear) and name != "lm_head"}
    with warnings.catch_warnings():
        # torch.ao's eager quantisation is deprecated in favour of torchao, which is not installed here.
        warnings.simplefilter("ignore")
        int8 = quantize_dynamic(int8, spec, dtype=torch.qint8)
    return {"hf-bf16": HfPath(copy.deepcopy(model).to(torch.bfloat16), tokenizer), "hf-int8": HfPath(int8, tokenizer)}


class LlamaCppPath:
    """llama.cpp (llama-cpp-python) on the bundled GGUF, one sequence at a time."""

    def __init__(self, threads: int):
        from llama_cpp import Llama

        from training.checkpoints import bundled_gguf_path

        self.llama = Llama(model_path=str(bundled_gguf_path()), n_ctx=2048, n_threads=threads or None,
                           logits_all=True, verbose=False)

    def timed(self, prompt_ids: torch.Tensor, *, batch: int, tokens: int, sampled: bool) -> dict:
        started, first = time.perf_counter(), None
        for _ in range(batch):
            self.llama.reset()
            written = 0
            for _token in self.llama.generate(prompt_ids[0].tolist(), temp=0.8 if sampled else 0.0, top_p=0.95,
                                              top_k=0, reset=True):
                first = first or time.perf_counter()
                written += 1
                if written == tokens:
                    break
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "tokens_per_second": batch * tokens / seconds, "first_token": first - started}

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """(T, vocab) next-token logits after each of `ids`' tokens."""
        import numpy

        self.llama.reset()
        self.llama.eval(ids[0].tolist())
        return torch.from_numpy(numpy.array(self.llama.scores[: ids.shape[1]], dtype=numpy.float32))


@torch.inference_mode()
def fidelity(reference: HfPath, path, prompts: list[torch.Tensor], tokens: int) -> dict:
    """Per-token KL(reference || path) on the reference's greedy replies, and greedy agreement."""
    kls, agree, total = [], 0, 0
    for ids in prompts:
        greedy = reference.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                          do_sample=False, pad_token_id=reference.tokenizer.pad_token_id)
        start = ids.shape[1] - 1
        reference_logp = torch.log_softmax(reference.logits(greedy)[start:-1], -1)
        # llama.cpp's vocabulary may be padded past the tokenizer's: only the shared ids are compared.
        path_logits = path.logits(greedy)[start:-1, : reference_logp.shape[-1]]
        kls.append((reference_logp.exp() * (reference_logp - torch.log_softmax(path_logits, -1))).sum(-1))
        agree += int((path_logits.argmax(-1) == greedy[0, ids.shape[1]:]).sum())
        total += greedy.shape[1] - ids.shape[1]
    return {"kl_per_token": float(torch.cat(kls).mean()), "greedy_agreement": agree / total}


def compare_backends(args, loaded, contexts) -> None:
    reference = HfPath(loaded.model, loaded.tokenizer)
    paths = {"hf": reference, **reduced_precision_paths(loaded.model, loaded.tokenizer)}
    try:
        paths["llama.cpp"] = LlamaCppPath(args.threads)
    except ImportError:
        print("llama-cpp-python is not installed: no llama.cpp leg")
    prompts = [loaded.tokenizer.apply_chat_template(context, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)["input_ids"] for context in contexts]
    best: dict[tuple, dict] = {}
    for repeat in range(args.repeats):
        for batch in (1, 2, 16):
            for sampled in (False, True):
                for name, path in paths.items():
                    result = path.timed(prompts[0], batch=batch, tokens=args.max_new_tokens, sampled=sampled)
                    key = (name, batch, sampled)
                    print(f"  run {repeat + 1} {name:>8} batch {batch:>2} {'sampled' if sampled else 'greedy':>7}: "
                          f"{result['seconds']:6.2f} s, {result['tokens_per_second']:6.1f} tokens/s, "
                          f"first token {result['first_token']:.3f} s", flush=True)
                    if key not in best or result["seconds"] < best[key]["seconds"]:
                        best[key] = result
    print(f"\nbest of {args.repeats} runs, {args.max_new_tokens} new tokens per reply, "
          f"torch threads {torch.get_num_threads()}")
    print("| path | batch | decoding | tokens/s | x hf | first token (s) | seconds |")
    print("|---|---|---|---|---|---|---|")
    for (name, batch, sampled), result in best.items():
        ratio = result["tokens_per_second"] / best[("hf", batch, sampled)]["tokens_per_second"]
        print(f"| {name} | {batch} | {'sampled' if sampled else 'greedy'} | {result['tokens_per_second']:.1f} | "
              f"{ratio:.2f} | {result['first_token']:.3f} | {result['seconds']:.2f} |")
    for name, path in paths.items():
        if path is not reference:
            found = fidelity(reference, path, prompts[: args.fidelity_prompts], args.max_new_tokens)
            print(f"{name}: KL(hf || {name}) {found['kl_per_token']:.4f} nats per token, greedy agreement "
                  f"{found['greedy_agreement']:.1%} on {min(len(prompts), args.fidelity_prompts)} prompts' "
                  f"float32 greedy replies")
    chat = best[("hf", 2, True)]
    print(f"two-reply chat turn with hf (batch 2, sampled): {chat['seconds']:.1f} s, first token "
          f"{chat['first_token']:.2f} s (goal: under 5 s, first token under 1 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO_ROOT / "var" / "models" / "SmolLM2-135M-Instruct"))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backends", action="store_true", help="compare HF float32 with the faster CPU paths")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--fidelity-prompts", type=int, default=8)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = [json.loads(line) for line in PROMPTS_FILE.read_text().splitlines() if line.strip()][: args.prompts]
    contexts = [[{"role": "user", "content": row["text"]}] for row in rows]
    loaded = load_causal_lm(args.model, device=args.device)
    loaded.model.eval()
    if args.backends:
        compare_backends(args, loaded, contexts)
        return
    shared = dict(candidates_per_context=args.k, max_new_tokens=args.max_new_tokens, seed=0)
    one_at_a_time = GenerationConfig(batch_size=1, **shared)
    batched = GenerationConfig(batch_size=args.batch_size, **shared)
    print(f"model={args.model} device={args.device} torch_threads={torch.get_num_threads()} "
          f"prompts={len(contexts)} k={args.k} max_new_tokens={args.max_new_tokens} batch_size={args.batch_size}")

    best = {"one-at-a-time": None, "batched": None}
    for repeat in range(args.repeats):
        for name, config in (("one-at-a-time", one_at_a_time), ("batched", batched)):
            result = run(loaded, contexts, config)
            rate = result["candidates"] / result["seconds"]
            print(f"  run {repeat + 1} {name:>13}: {result['candidates']} candidates, {result['tokens']} tokens "
                  f"in {result['seconds']:.1f} s = {rate:.2f} candidates/s, {result['tokens'] / result['seconds']:.1f} tokens/s")
            if best[name] is None or rate > best[name][0]:
                best[name] = (rate, result["tokens"] / result["seconds"])
    ratio = best["batched"][0] / best["one-at-a-time"][0]
    print(f"one-at-a-time: {best['one-at-a-time'][0]:.2f} candidates/s ({best['one-at-a-time'][1]:.1f} tokens/s)")
    print(f"batched:       {best['batched'][0]:.2f} candidates/s ({best['batched'][1]:.1f} tokens/s)")
    print(f"batched / one-at-a-time = {ratio:.2f}x candidates/s")


if __name__ == "__main__":
    main()
