"""A/B in one process: step time (sample + decode) with the argmax path vs llama_sampler_sample."""
import sys, time, statistics
from pathlib import Path
from vlmserve.config import EngineConfig
from vlmserve.engine.backend import BatchToken
from vlmserve.engine.llamacpp.backend import LlamaBackend
from vlmserve.types import SamplingParams
d = Path(sys.argv[1]); blocks = int(sys.argv[2]); per = int(sys.argv[3])
b = LlamaBackend(EngineConfig(model_path=d/'model.gguf', mmproj_path=d/'mmproj.gguf', n_ctx_per_slot=4096, n_parallel=1, n_threads=1))
toks = b.tokenize("<|im_start|>user\n请用中文描述这张图片。<|im_end|>\n<|im_start|>assistant\n")
res = {True: [], False: []}; samp = {True: [], False: []}
p = SamplingParams(max_tokens=10, temperature=0.0)
for blk in range(blocks):
    for fast in ((True, False) if blk % 2 == 0 else (False, True)):
        b.seq_truncate(0, 0)
        s = b.new_sampler(p, fast_greedy=fast)
        b.decode([BatchToken(0, t, i, i == len(toks) - 1) for i, t in enumerate(toks)])
        pos, idx = len(toks), len(toks) - 1
        for _ in range(per):
            t0 = time.perf_counter(); tok = b.sample(s, idx); t1 = time.perf_counter()
            b.decode([BatchToken(0, tok, pos, True)]); t2 = time.perf_counter()
            res[fast].append(t2 - t0); samp[fast].append(t1 - t0); pos += 1; idx = 0
        s.free()
m = lambda x: statistics.median(x) * 1e3
for fast in (False, True):
    print(f"{'argmax' if fast else 'llama_sampler_sample'}: step {m(res[fast]):.3f} ms (sample {m(samp[fast]):.3f} ms) n={len(res[fast])}")
print(f"saved per token: {m(res[False]) - m(res[True]):.3f} ms step, {m(samp[False]) - m(samp[True]):.3f} ms sample")
b.close()
