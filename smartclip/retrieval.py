"""Embeddings of an evaluation set and what they score: text↔image recall@k and zero-shot
accuracy, with unmasked, normalised embeddings.

Ties count as a random tie-break would: every recall and accuracy is its expectation over the
orders of tied items (`hit_probability`), so a model whose embeddings carry no information
scores chance (R@k = k / images for text→image with one image per caption; top-1 = 1 / classes).
NaN or infinite embeddings are an error (`NonFiniteFeatures`), never a score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from smartclip.cli import ConfigError
from smartclip.data import EvalSet
from smartclip.model import SmartCLIPModel

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class NonFiniteFeatures(ValueError):
    """Embeddings with NaN or infinite entries (diverged or broken weights): no metric may score
    them."""


def check_finite(features: torch.Tensor, what: str) -> torch.Tensor:
    """`features` [n, d] unchanged; NonFiniteFeatures saying how many of the `what` embeddings
    have a NaN or infinite entry, if any has."""
    bad = int((~torch.isfinite(features)).flatten(1).any(1).sum()) if len(features) else 0
    if bad:
        raise NonFiniteFeatures(f"{bad} of {len(features)} {what} embeddings are NaN or infinite")
    return features


def hit_probability(scores: torch.Tensor, own: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """[queries, len(ks)]: for each query row of `scores` [Q, N] and each k, the probability
    that one of its own items (`own` [Q, N], bool) ranks in the top k when tied scores are put in
    a uniformly random order.

    With b the query's best own score, g = #{items scoring > b}, and m own and o other items
    scoring exactly b, the tied block takes ranks g … g+m+o−1 in random order; none of its first
    j = k − g places holds an own item with probability C(o, j) / C(o+m, j), so

        P(hit@k) = 0 if j ≤ 0,   1 if j > o,   1 − C(o, j) / C(o+m, j) otherwise.

    With one own item this is clamp(j / (o+1), 0, 1) (a tie of two counts half, as the hard
    negatives' `wins` does); without ties it is [rank < k], i.e. top-k recall.
    """
    best = scores.masked_fill(~own, -torch.inf).max(1, keepdim=True).values
    above = (scores > best).sum(1, keepdim=True)
    tied = scores == best
    m = (tied & own).sum(1, keepdim=True).double()
    o = (tied & ~own).sum(1, keepdim=True).double()
    j = torch.tensor(ks, device=scores.device, dtype=torch.float64)[None] - above
    i = j.clamp(min=0).minimum(o)  # j where the binomial ratio applies
    log_none = torch.lgamma(o + 1) - torch.lgamma(o - i + 1)
    log_none += torch.lgamma(o + m - i + 1) - torch.lgamma(o + m + 1)
    return torch.where(j <= 0, 0.0, torch.where(j > o, 1.0, 1 - log_none.exp()))


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@k in percent for t2i and i2t from similarities S = T Iᵀ ([captions, images]).

    t2i: caption c's own image is image(c); i2t: image i's own captions are those of i, and it
    counts as found when one of them is in its top k. R@k = mean over queries of
    `hit_probability` (ties broken at random, in expectation: constant embeddings score chance,
    k / #images for t2i; with continuous features there are no ties and this is the usual
    [rank < k]). NonFiniteFeatures for NaN or infinite features.
    """
    check_finite(image_features, "image")
    check_finite(text_features, "text")
    sim = text_features.float() @ image_features.float().T
    own = torch.zeros_like(sim, dtype=torch.bool)
    own[torch.arange(len(sim), device=sim.device), text_to_image.to(sim.device)] = True
    return {
        f"{name}_r{k}": hits[:, n].mean().item() * 100
        for name, hits in (
            ("t2i", hit_probability(sim, own, ks)),
            ("i2t", hit_probability(sim.T, own.T, ks)),
        )
        for n, k in enumerate(ks)
    }


@torch.no_grad()
def encode_images(
    model: SmartCLIPModel,
    eval_set: EvalSet,
    transform: Callable,
    device: torch.device,
    autocast: Callable,
    batch_size: int = 128,
    desc: str | None = None,
) -> torch.Tensor:
    """Normalised, unmasked image embeddings of every image of `eval_set`, in order, with a
    progress bar named `desc` on a terminal (None: none); NonFiniteFeatures if one is NaN or
    infinite."""
    loader = eval_set.image_loader(transform, batch_size)
    with autocast():
        parts = [  # tqdm's disable=None: no bar where stderr is no terminal (a log, a pipe)
            model.encode_image(x.to(device)).float()
            for x in tqdm(loader, desc=desc, disable=None if desc else True, leave=False)
        ]
    return check_finite(torch.cat(parts), "image")


@torch.no_grad()
def encode_texts(
    model: SmartCLIPModel,
    tokenizer: Callable,
    texts: Sequence[str],
    device: torch.device,
    autocast: Callable,
    batch_size: int = 128,
) -> torch.Tensor:
    """Normalised, unmasked text embeddings; NonFiniteFeatures if one is NaN or infinite."""
    with autocast():
        parts = [
            model.encode_text(tokenizer(list(texts[i : i + batch_size])).to(device)).float()
            for i in range(0, len(texts), batch_size)
        ]
    return check_finite(torch.cat(parts), "text")


def evaluate_retrieval(
    model: SmartCLIPModel,
    eval_set: EvalSet,
    tokenizer: Callable,
    transform: Callable,
    device: torch.device,
    autocast: Callable,
    batch_size: int = 128,
) -> dict[str, float]:
    """Recall@{1,5,10} of text→image and image→text retrieval with unmasked embeddings; the
    model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    images = encode_images(model, eval_set, transform, device, autocast, batch_size)
    texts = encode_texts(model, tokenizer, eval_set.captions, device, autocast, batch_size)
    model.train(was_training)
    return retrieval_metrics(images, texts, eval_set.text_to_image)


def image_set(images: Sequence[Path], labels: Sequence[int] = ()) -> EvalSet:
    """An EvalSet of images alone, for `encode_images` (class labels, if any, in
    `text_to_image`'s place)."""
    return EvalSet(
        images=tuple(images),
        image_ids=tuple(str(p) for p in images),
        captions=(),
        text_to_image=torch.tensor(labels, dtype=torch.long),
        n_malformed=0,
        n_bad_images=0,
    )


def zeroshot_set(folder: str | Path) -> tuple[EvalSet, list[str]]:
    """Images of `folder/<class>/*` as an EvalSet (labels in `text_to_image`'s place) and the
    class names (folder names, underscores as spaces), sorted."""
    folder = Path(folder)
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    images, labels = [], []
    for label, path in enumerate(classes):
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        images += files
        labels += [label] * len(files)
    if not images:
        raise ConfigError("zeroshot_dir", f"no class folders with images in {folder}")
    return image_set(images, labels), [p.name.replace("_", " ") for p in classes]


def zeroshot_metrics(
    image_features: torch.Tensor, class_embeddings: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) of ranking the classes by ⟨image, class_c⟩, ties broken
    at random in expectation (`hit_probability`: constant features score 1/C and min(5, C)/C).
    NonFiniteFeatures for NaN or infinite features."""
    check_finite(image_features, "image")
    check_finite(class_embeddings, "class")
    logits = image_features.float() @ class_embeddings.float().T
    own = torch.nn.functional.one_hot(labels.to(logits.device), logits.shape[1]).bool()
    hits = hit_probability(logits, own, (1, 5)).mean(0) * 100
    return {"top1": hits[0].item(), "top5": hits[1].item()}


def evaluate_zeroshot(
    model: SmartCLIPModel,
    tokenizer: Callable,
    transform: Callable,
    folder: str | Path,
    templates: Sequence[str],
    device: torch.device,
    autocast: Callable,
    batch_size: int = 128,
) -> dict[str, float]:
    """Zero-shot top-1/top-5 accuracy on `folder/<class>/*` with a prompt-ensemble classifier:
    row c = normalise(mean over templates of f_T(template(c)))."""
    eval_set, classes = zeroshot_set(folder)
    images = encode_images(model, eval_set, transform, device, autocast, batch_size)
    prompts = [t.format(c) for c in classes for t in templates]
    per_prompt = encode_texts(model, tokenizer, prompts, device, autocast, batch_size)
    classifier = per_prompt.view(len(classes), len(templates), -1).mean(1)
    classifier = torch.nn.functional.normalize(classifier, dim=-1)
    return {
        **zeroshot_metrics(images, classifier, eval_set.text_to_image),
        "classes": len(classes),
        "images": len(eval_set.images),
    }
