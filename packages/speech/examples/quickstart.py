"""Build a tiny offline corpus, train SGMSE+ briefly, enhance one held-out file, score it."""

import sys
from pathlib import Path

from polydiff.speech.audio import read_audio, write_audio
from polydiff.speech.corpus import build_corpus
from polydiff.speech.metrics import evaluate_pair
from polydiff.speech.sgmse import SGMSE, SGMSEConfig, train_sgmse
from polydiff.speech.sgmse.enhance import enhance

work = Path(sys.argv[1] if len(sys.argv) > 1 else "sgmse-quickstart")
corpus = work / "corpus"  # train|valid|test/{clean,noisy}/*.wav, as VoiceBank-DEMAND
build_corpus(corpus, n_train=8, n_valid=1, n_test=1, seconds=(1.0, 1.5), snr_db=(0.0, 5.0))

model = SGMSE(SGMSEConfig(preset="tiny", objective="data"))  # "score" is the paper's
train_sgmse(model, corpus, work / "run", steps=20, batch_size=4, segment_frames=32,
            progress=False)

noisy_file = sorted((corpus / "test" / "noisy").glob("*.wav"))[0]
noisy, sr = read_audio(noisy_file, sample_rate=model.sample_rate)
clean, _ = read_audio(corpus / "test" / "clean" / noisy_file.name, sample_rate=sr)
enhanced = enhance(model, noisy, sr, sampler="pc", steps=10)  # reverse diffusion + Langevin
write_audio(work / "enhanced.wav", enhanced, sr)
print({"noisy": evaluate_pair(clean, noisy, sr), "enhanced": evaluate_pair(clean, enhanced, sr)})
