"""convert_checkpoint: a complete seq-cls checkpoint, written and verified by streaming, refused when it cannot be."""

from __future__ import annotations

import filecmp
import itertools
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from qwen3_vllm_rerank.convert import convert_checkpoint, verify_conversion
from qwen3_vllm_rerank.convert._conversion_plan import score_values
from qwen3_vllm_rerank.convert._reading import decode
from qwen3_vllm_rerank.convert._verify import VERIFY_PAIRS
from qwen3_vllm_rerank.convert._writing import Copier
from qwen3_vllm_rerank.errors import ConversionError, Qwen3RerankError
from qwen3_vllm_rerank.prompt import format_prompt
from qwen3_vllm_rerank.testing import make_fixture_checkpoint, make_vl_fixture_checkpoint
from tests.convert.hostile import link as _link
from tests.support.fixtures import Checkpoints
from tests.support.pairs import FIDELITY_CASES

pytestmark = pytest.mark.heavy  # fixture checkpoints built with torch; some verify with transformers

YES, NO = 9693, 2152


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(str(file)))  # load_file validates the format (contiguous offsets)
    return tensors


def _config(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "config.json").read_text())
    return data


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.endswith(".converting")]


@pytest.fixture(scope="module")
def converted(checkpoints: Checkpoints, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both fixtures converted once (verified, streaming), for the read-only tests below."""
    root = tmp_path_factory.mktemp("converted")
    return {
        name: convert_checkpoint(checkpoints.get(name), root / name, progress=False)
        for name in ("tied", "untied")
    }


# --- what is written --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tied", "untied"])
def test_score_is_yes_row_minus_no_row_and_body_is_unchanged(
    checkpoints: Checkpoints, converted: dict[str, Path], name: str
) -> None:
    original = _tensors(checkpoints.get(name))
    result = _tensors(converted[name])
    head = original["model.embed_tokens.weight" if name == "tied" else "lm_head.weight"]
    expected_score = (head[YES].float() - head[NO].float()).unsqueeze(0)
    assert result["score.weight"].shape == (1, 128)
    assert result["score.weight"].dtype == head.dtype
    assert torch.equal(result["score.weight"], expected_score)
    assert "lm_head.weight" not in result
    assert set(result) == (set(original) - {"lm_head.weight"}) | {"score.weight"}
    for tensor_name, tensor in original.items():
        if tensor_name != "lm_head.weight":
            assert torch.equal(result[tensor_name], tensor), tensor_name


@pytest.mark.parametrize("name", ["tied", "untied"])
def test_config_is_a_one_logit_seq_cls_config(
    checkpoints: Checkpoints, converted: dict[str, Path], name: str
) -> None:
    before = _config(checkpoints.get(name))
    after = _config(converted[name])
    assert after["architectures"] == ["Qwen3ForSequenceClassification"]
    assert after["num_labels"] == 1
    assert after["id2label"] == {"0": "LABEL_0"}
    assert after["pad_token_id"] == 151643
    assert after["use_sep_token"] is False
    assert after["tie_word_embeddings"] == before["tie_word_embeddings"]
    unchanged = set(before) - {"architectures", "pad_token_id"}
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}


@pytest.mark.parametrize("name", ["tied", "untied"])
def test_tokenizer_and_generation_config_are_copied(
    checkpoints: Checkpoints, converted: dict[str, Path], name: str
) -> None:
    for file in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert filecmp.cmp(checkpoints.get(name) / file, converted[name] / file, shallow=False), file
    assert not list(converted[name].glob(".*")), "no temporary files left"


def test_sentence_transformers_files_are_the_converted_ones(
    checkpoints: Checkpoints, converted: dict[str, Path]
) -> None:
    # The source (like a published Sentence Transformers-ready reranker) reads the score from
    # logit(yes) - logit(no) with a LogitScore module; the converted checkpoint's one logit replaces it.
    source, out = checkpoints.get("tied"), converted["tied"]
    assert "LogitScore" in (source / "modules.json").read_text()
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer"]
    assert not (out / "1_LogitScore").exists()
    module = json.loads((out / "sentence_bert_config.json").read_text())
    assert module["transformer_task"] == "sequence-classification"
    st_config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert st_config["activation_fn"] == "torch.nn.modules.activation.Sigmoid"
    assert (out / "chat_template.jinja").read_text() == (source / "chat_template.jinja").read_text()


def test_sharded_index_is_updated(checkpoints: Checkpoints, converted: dict[str, Path]) -> None:
    source = checkpoints.get("untied")
    out = converted["untied"]
    before = json.loads((source / "model.safetensors.index.json").read_text())
    index = json.loads((out / "model.safetensors.index.json").read_text())
    tensors = _tensors(out)
    assert set(index["weight_map"]) == set(tensors)
    for tensor_name, file in index["weight_map"].items():
        with safe_open(str(out / file), framework="pt") as handle:
            assert tensor_name in handle.keys()  # noqa: SIM118 - safe_open is not a mapping
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    assert index["metadata"]["total_size"] == nbytes
    assert index["metadata"]["total_parameters"] == sum(t.numel() for t in tensors.values())
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(set(before["weight_map"].values()))
    # Shards without lm_head are byte-for-byte the source's; the lm_head shard now holds score.
    lm_head_file = before["weight_map"]["lm_head.weight"]
    assert index["weight_map"]["score.weight"] == lm_head_file
    for file in set(before["weight_map"].values()) - {lm_head_file}:
        assert filecmp.cmp(source / file, out / file, shallow=False), file


def test_single_file_checkpoint_stays_single_file(
    checkpoints: Checkpoints, converted: dict[str, Path]
) -> None:
    out = converted["tied"]
    assert [p.name for p in out.glob("*.safetensors")] == ["model.safetensors"]
    assert not (out / "model.safetensors.index.json").exists()


def test_safetensors_header_is_aligned_and_well_formed(converted: dict[str, Path]) -> None:
    for file in converted["untied"].glob("*.safetensors"):
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        assert length % 8 == 0
        assert header["__metadata__"] == {"format": "pt"}
        spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
        assert spans[0][0] == 0
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert 8 + length + spans[-1][1] == file.stat().st_size


def test_link_hard_links_unchanged_shards(checkpoints: Checkpoints, tmp_path: Path) -> None:
    source = checkpoints.get("untied")
    out = convert_checkpoint(source, tmp_path / "linked", verify=False, link=True, progress=False)
    weight_map = json.loads((source / "model.safetensors.index.json").read_text())["weight_map"]
    lm_head_file = weight_map["lm_head.weight"]
    for file in set(weight_map.values()):
        same_inode = (source / file).stat().st_ino == (out / file).stat().st_ino
        assert same_inode == (file != lm_head_file), file
    assert (source / lm_head_file).stat().st_nlink == 1
    assert "score.weight" in _tensors(out)


def test_bfloat16_score_is_rounded_once_and_verification_accounts_for_it(tmp_path: Path) -> None:
    source = make_fixture_checkpoint(tmp_path / "bf16", dtype="bfloat16", tied=False, seed=5)
    out = convert_checkpoint(source, tmp_path / "out", verify=False, progress=False)
    head = _tensors(source)["lm_head.weight"]
    score = _tensors(out)["score.weight"]
    assert score.dtype == torch.bfloat16
    exact = (head[YES].float() - head[NO].float()).unsqueeze(0)
    assert torch.equal(score, exact.to(torch.bfloat16))
    streaming = verify_conversion(source, out)
    assert streaming.expected == ()
    assert streaming.ok
    assert streaming.score_rounding == (score.float() - exact).abs().max().item() > 0
    result = verify_conversion(source, out, model=True)
    assert result.ok
    assert len(result.expected) == len(result.actual) == len(VERIFY_PAIRS)
    assert max(result.rounding_bounds) > 0  # the bf16 rounding of W[yes] - W[no] is real ...
    assert result.max_abs_diff <= max(result.tolerances)  # ... and within what it explains


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16"])
def test_score_rounding_matches_torch_bit_for_bit(dtype: str) -> None:
    # The converter computes W[yes] - W[no] without torch; it must round exactly like torch:
    # float32 subtraction, then round-to-nearest-even into the stored dtype.
    torch_dtype = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}[dtype]
    generator = torch.Generator().manual_seed(0)
    special = torch.tensor([0.0, -0.0, 1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1e-40, -1e-40, 3e4, 1e-8, -65504.0])
    a = torch.cat([torch.randn(4096, generator=generator) * 3, special]).to(torch_dtype)
    b = torch.cat([torch.randn(4096, generator=generator), torch.zeros(len(special))]).to(torch_dtype)
    expected = (a.float() - b.float()).to(torch_dtype)
    exact, data = score_values(a.double().tolist(), b.double().tolist(), dtype)
    assert data == expected.view(torch.uint8).numpy().tobytes()
    assert decode(data, dtype)[:4096] == expected.double().tolist()[:4096]
    assert exact[:4096] == (a.float() - b.float()).double().tolist()[:4096]


def test_buffered_copy_equals_kernel_copy(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "src").write_bytes(data)
    for kernel in (True, False):
        copied: list[int] = []
        copier = Copier(copied.append, kernel=kernel)
        target = tmp_path / f"dst-{kernel}"
        src_fd = os.open(tmp_path / "src", os.O_RDONLY)
        dst_fd = os.open(target, os.O_WRONLY | os.O_CREAT)
        try:
            copier.copy(src_fd, 5, dst_fd, len(data) - 10)
        finally:
            os.close(src_fd)
            os.close(dst_fd)
        assert target.read_bytes() == data[5:-5]
        assert sum(copied) == len(data) - 10


# --- it loads and scores like the original in plain transformers ----------------------------


@pytest.mark.parametrize("name", ["tied", "untied"])
def test_transformers_batched_logits_equal_yes_minus_no(
    checkpoints: Checkpoints, converted: dict[str, Path], name: str
) -> None:
    case = FIDELITY_CASES[0]
    prompts = [format_prompt(case.query, doc) for doc in case.documents]
    tokenizer = AutoTokenizer.from_pretrained(converted[name])
    original: Any = AutoModelForCausalLM.from_pretrained(checkpoints.get(name), dtype=torch.float32)
    original.eval()
    expected = []
    with torch.inference_mode():
        for prompt in prompts:
            logits = original(**tokenizer(prompt, return_tensors="pt")).logits[0, -1]
            expected.append(float(logits[YES] - logits[NO]))
        model = AutoModelForSequenceClassification.from_pretrained(
            converted[name], dtype=torch.float32
        ).eval()
        for side in ("right", "left"):
            tokenizer.padding_side = side
            batch = tokenizer(prompts, return_tensors="pt", padding=True)
            assert (batch["attention_mask"] == 0).any(), "the batch must be padded"
            actual = model(**batch).logits[:, 0].tolist()
            assert actual == pytest.approx(expected, abs=1e-4), side
    assert max(expected) - min(expected) > 0.2, "spread, so the comparison means something"


# --- verification -------------------------------------------------------------------------------


def _tampered(converted: Path, target: Path, change: str) -> Path:
    """A copy of ``converted`` with one thing changed."""
    shutil.copytree(converted, target)
    if change == "tensor byte":  # inside a shard copied whole (not the one that holds score.weight)
        index = json.loads((target / "model.safetensors.index.json").read_text())
        shard = target / index["weight_map"]["model.layers.0.mlp.up_proj.weight"]
        assert shard.name != index["weight_map"]["score.weight"]
        data = bytearray(shard.read_bytes())
        (length,) = struct.unpack("<Q", data[:8])
        begin = json.loads(data[8 : 8 + length])["model.layers.0.mlp.up_proj.weight"]["data_offsets"][0]
        data[8 + length + begin + 3] ^= 0x01
        shard.write_bytes(bytes(data))
    elif change == "score":
        index = json.loads((target / "model.safetensors.index.json").read_text())
        shard = target / index["weight_map"]["score.weight"]
        with safe_open(str(shard), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        tensors["score.weight"] = tensors["score.weight"] * 1.001
        from safetensors.torch import save_file

        save_file(tensors, str(shard), metadata={"format": "pt"})
    elif change in ("pad_token_id", "rope_theta"):
        config = _config(target)
        config[change] += 1
        (target / "config.json").write_text(json.dumps(config))
    elif change == "tokenizer":
        (target / "tokenizer.json").write_text(
            (target / "tokenizer.json").read_text().replace("<think>", "<thonk>")
        )
    elif change == "template":
        (target / "chat_template.jinja").unlink()
    return target


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ("tensor byte", r"has a model\.layers\.0\.mlp\.up_proj\.weight that differs from the source's"),
        ("score", r"has a score\.weight that is not W\[yes\] - W\[no\] of the source"),
        ("pad_token_id", "has a wrong config.json"),
        ("rope_theta", "has a wrong config.json"),
        ("tokenizer", "has a tokenizer.json other than the source's"),
        ("template", "has a chat_template.jinja other than"),
    ],
)
def test_streaming_verification_catches_any_difference(
    checkpoints: Checkpoints, converted: dict[str, Path], tmp_path: Path, change: str, match: str
) -> None:
    source = checkpoints.get("untied")
    result = verify_conversion(source, converted["untied"])
    assert result.tensors == len(_tensors(source)) - 1
    assert result.compared_bytes > 0
    assert result.files == ("generation_config.json", "tokenizer.json", "tokenizer_config.json")
    tampered = _tampered(converted["untied"], tmp_path / "tampered", change)
    with pytest.raises(ConversionError, match=f"verification failed: {tampered} {match}") as info:
        verify_conversion(source, tampered)
    assert "Do not serve it" in str(info.value)


def test_verification_catches_a_wrong_head(checkpoints: Checkpoints, tmp_path: Path) -> None:
    source = checkpoints.get("tied")
    swapped = convert_checkpoint(
        source, tmp_path / "swapped", yes_token="no", no_token="yes", verify=False, progress=False
    )
    with pytest.raises(ConversionError, match=r"verification failed: .* has a score\.weight that is not"):
        verify_conversion(source, swapped)
    # The forward-pass check, on its own, catches it too: the logits are negated.
    from qwen3_vllm_rerank.convert._conversion_plan import inspect
    from qwen3_vllm_rerank.convert._verify import verify_model

    checked = verify_conversion(source, swapped, yes_token="no", no_token="yes")
    with pytest.raises(ConversionError, match="does not score like") as info:
        verify_model(inspect(source, "yes", "no"), swapped, VERIFY_PAIRS, checked)
    assert "Do not serve it" in str(info.value)
    assert len(VERIFY_PAIRS) >= 4


def test_linked_shards_are_verified_without_reading_them(checkpoints: Checkpoints, tmp_path: Path) -> None:
    source = checkpoints.get("untied")
    linked = convert_checkpoint(source, tmp_path / "linked", verify=False, link=True, progress=False)
    copied = convert_checkpoint(source, tmp_path / "copied", verify=False, progress=False)
    assert verify_conversion(source, linked).compared_bytes < verify_conversion(source, copied).compared_bytes


def test_convert_logs_the_verification(
    checkpoints: Checkpoints, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="qwen3_vllm_rerank.convert"):
        out = convert_checkpoint(checkpoints.get("tied"), tmp_path / "out", progress=False)
        assert f"verified {out}: 24 tensors identical to the source" in caplog.text
        assert "logits" not in caplog.text
        caplog.clear()
        out = convert_checkpoint(checkpoints.get("tied"), tmp_path / "model", verify="model", progress=False)
        assert f"verified {out}: 24 tensors identical" in caplog.text
        assert (
            "converted logits vs logit(yes) - logit(no) of the original on 4 templated pairs" in caplog.text
        )
    with pytest.raises(ConversionError, match="verify must be True, False or 'model'"):
        convert_checkpoint(checkpoints.get("tied"), tmp_path / "never", verify="models", progress=False)  # type: ignore[arg-type]


def test_default_conversion_never_imports_torch(checkpoints: Checkpoints, tmp_path: Path) -> None:
    # The default call, verification included, parses and copies bytes: no model, no torch.
    code = (
        "import sys; from qwen3_vllm_rerank.convert import convert_checkpoint; "
        f"convert_checkpoint({str(checkpoints.get('untied'))!r}, {str(tmp_path / 'out')!r}, progress=False); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()


# --- refusals: clear errors, nothing left behind ---------------------------------------------------


def _variant(source: Path, target: Path, **config_changes: Any) -> Path:
    """``source`` with a changed config.json (weights and tokenizer hard-linked: a symlink out of the
    checkpoint is refused)."""
    target.mkdir()
    for file in source.iterdir():
        if file.name != "config.json":
            _link(target / file.name, file)
    config = _config(source)
    for key, value in config_changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (target / "config.json").write_text(json.dumps(config))
    return target


def _refused(src: Path, dst: Path, match: str, **kwargs: Any) -> ConversionError:
    with pytest.raises(ConversionError, match=match) as info:
        convert_checkpoint(src, dst, progress=False, **kwargs)
    assert isinstance(info.value, Qwen3RerankError)
    assert not dst.exists() or not any(dst.iterdir())
    assert _leftovers(dst.parent) == []
    return info.value


def test_refuses_a_model_that_is_not_a_qwen3_causal_lm(checkpoints: Checkpoints, tmp_path: Path) -> None:
    llama = _variant(
        checkpoints.get("tied"), tmp_path / "llama", architectures=["LlamaForCausalLM"], model_type="llama"
    )
    _refused(llama, tmp_path / "out", "not an original Qwen3\\(-VL\\)-Reranker")


def test_refuses_an_already_converted_checkpoint(converted: dict[str, Path], tmp_path: Path) -> None:
    _refused(converted["tied"], tmp_path / "again", "already converted")
    relabelled = _variant(converted["tied"], tmp_path / "relabelled", architectures=["Qwen3ForCausalLM"])
    _refused(relabelled, tmp_path / "again", r"already has a score\.weight")


def test_refuses_a_destination_that_is_not_empty(checkpoints: Checkpoints, tmp_path: Path) -> None:
    dst = tmp_path / "busy"
    dst.mkdir()
    (dst / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match="not empty"):
        convert_checkpoint(checkpoints.get("tied"), dst, progress=False)
    assert [p.name for p in dst.iterdir()] == ["notes.txt"]
    with pytest.raises(ConversionError, match="is a file"):
        convert_checkpoint(checkpoints.get("tied"), dst / "notes.txt", progress=False)
    # An existing empty directory is fine.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert convert_checkpoint(checkpoints.get("tied"), empty, verify=False, progress=False) == empty
    assert (empty / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("yes", "no", "match"),
    [
        ("yes please", "no", r"'yes please' is not a single token .*tokenises as \['yes', 'Ġplease'\]"),
        ("yes", "Nope!", "'Nope!' is not a single token"),
        ("yes", "yes", "the same token"),
    ],
)
def test_refuses_tokens_that_are_not_single_vocabulary_tokens(
    checkpoints: Checkpoints, tmp_path: Path, yes: str, no: str, match: str
) -> None:
    _refused(checkpoints.get("tied"), tmp_path / "out", match, yes_token=yes, no_token=no)


def test_missing_tie_word_embeddings_means_untied(checkpoints: Checkpoints, tmp_path: Path) -> None:
    # Qwen3Config defaults to tie_word_embeddings=False: a tied checkpoint (no lm_head) whose
    # config lost the key is refused, not guessed at.
    unsaid = _variant(checkpoints.get("tied"), tmp_path / "unsaid", tie_word_embeddings=None)
    error = _refused(unsaid, tmp_path / "out", "no lm_head.weight")
    assert '"tie_word_embeddings": true' in str(error)
    # An untied checkpoint without the key converts from its lm_head.
    untied = _variant(checkpoints.get("untied"), tmp_path / "untied", tie_word_embeddings=None)
    out = convert_checkpoint(untied, tmp_path / "out2", verify=False, progress=False)
    head = _tensors(checkpoints.get("untied"))["lm_head.weight"]
    assert torch.equal(_tensors(out)["score.weight"][0], head[YES] - head[NO])


def test_refuses_non_safetensors_and_missing_files(checkpoints: Checkpoints, tmp_path: Path) -> None:
    source = checkpoints.get("tied")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((source / "config.json").read_text())
    (bare / "pytorch_model.bin").write_bytes(b"")
    _refused(bare, tmp_path / "out", r"found \['pytorch_model\.bin'\]\); only safetensors checkpoints")
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for file in ("config.json", "model.safetensors"):
        (no_tokenizer / file).hardlink_to(source / file)
    _refused(no_tokenizer, tmp_path / "out", "cannot read .*tokenizer.json")
    _refused(tmp_path / "nowhere", tmp_path / "out", "is not a directory")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for entry in source.iterdir():
        if entry.name != "model.safetensors":
            _link(truncated / entry.name, entry)
    (truncated / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes()[:4096])
    _refused(truncated, tmp_path / "out", "inconsistent offsets|not a valid safetensors file")


# --- Qwen3-VL rerankers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vl(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Tiny Qwen3-VL rerankers (tied like the 2B, untied like the 8B), original and converted."""
    root = tmp_path_factory.mktemp("vl")
    pairs = {}
    for name in ("tied", "untied"):
        source = make_vl_fixture_checkpoint(root / f"{name}-original", tied=name == "tied")
        pairs[name] = (source, convert_checkpoint(source, root / name, progress=False))
    return pairs


@pytest.mark.parametrize("name", ["tied", "untied"])
def test_a_qwen3_vl_reranker_converts_to_a_qwen3_vl_seq_cls_checkpoint(
    vl: dict[str, tuple[Path, Path]], name: str
) -> None:
    source, out = vl[name]
    original, result = _tensors(source), _tensors(out)
    head = original["model.language_model.embed_tokens.weight" if name == "tied" else "lm_head.weight"]
    assert torch.equal(result["score.weight"], (head[YES].float() - head[NO].float()).unsqueeze(0))
    assert set(result) == (set(original) - {"lm_head.weight"}) | {"score.weight"}
    config = _config(out)
    assert config["architectures"] == ["Qwen3VLForSequenceClassification"]
    assert config["num_labels"] == 1
    assert config["tie_word_embeddings"] is (name == "tied")
    # Its own chat template and processor configs stay; no Sentence Transformers files: it cannot load it.
    for file in ("chat_template.jinja", "preprocessor_config.json", "video_preprocessor_config.json"):
        assert filecmp.cmp(source / file, out / file, shallow=False), file
    assert not (out / "modules.json").exists()
    assert verify_conversion(source, out).tensors == len(original) - (name == "untied")
    with pytest.raises(ConversionError, match="verify='model' is for text rerankers"):
        verify_conversion(source, out, model=True)
