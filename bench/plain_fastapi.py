"""The baseline a user would write first: a plain FastAPI endpoint, no batching, no limits, one process.

`POST /v1/predict` takes the same multipart form, decodes and preprocesses with the service's own code, and runs
the model on one sample in FastAPI's thread pool. bench/scaling.py runs it beside fusion-serve at concurrency 1.

    python bench/plain_fastapi.py --port 8140 --models-dir models --model digits
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated

import torch
import uvicorn
from fastapi import FastAPI, File, Form, UploadFile

from app.config import Settings
from app.engine.config import EngineConfig
from app.engine.pipeline import prepare_sample
from app.engine.predictor import Predictor
from app.inputs.parts import RawInputs
from app.inputs.preprocess import Preprocessor
from app.model.artifact import load_artifact


def build(model_dir: Path) -> FastAPI:
    artifact = load_artifact(model_dir)
    predictor = Predictor(artifact, torch.device("cpu"))
    predictor.warmup(1)
    preprocessor = Preprocessor(artifact.spec)
    limits = EngineConfig.from_settings(Settings()).limits
    labels = artifact.spec.labels
    app = FastAPI()

    @app.post("/v1/predict")
    def predict(
        image: Annotated[UploadFile | None, File()] = None,
        text: Annotated[str | None, Form()] = None,
        audio: Annotated[UploadFile | None, File()] = None,
    ) -> dict:
        raw = RawInputs(
            image=image.file.read() if image else None, text=text, audio=audio.file.read() if audio else None
        )
        (scores,) = predictor.predict([prepare_sample(preprocessor, raw, limits)])
        return {"probabilities": dict(zip(labels, scores.probabilities.tolist()))}

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8140)
    ap.add_argument("--models-dir", type=Path, default=Path("models"))
    ap.add_argument("--model", default="digits")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    uvicorn.run(build(args.models_dir / args.model), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
