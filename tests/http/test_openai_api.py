"""The OpenAI-compatible API of a real server, through the official ``openai`` SDK."""

from __future__ import annotations

import base64
import threading
import uuid

import httpx
import openai
import pytest

from live_server import LiveServer, metric_value, png_data_uri

IMAGE = png_data_uri(768, 768)  # 24 x 24 merged patches: 576 image tokens
QUESTION = "请用中文描述这张图片"


def image_message(text: str | None = QUESTION, url: str = IMAGE) -> dict:
    content: list[dict] = [{"type": "image_url", "image_url": {"url": url}}]
    if text:
        content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


@pytest.fixture(scope="module")
def server(start_server) -> LiveServer:
    # A small window, so the sliding-window test needs little text; 1 MB images, so the
    # size-limit tests need small bodies. The page is on, as in real use.
    return start_server("--parallel", "2", "--ctx-size", "4096", "--context-budget", "1024",
                        "--image-max-mb", "1", "--video-max-mb", "1")


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="anything", max_retries=0,
                         timeout=60)


def error_of(exc: openai.APIStatusError) -> dict:
    return exc.response.json()["error"]


# ---------------------------------------------------------------------------- answers


def test_health(server: LiveServer) -> None:
    response = httpx.get(f"{server.url}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["slots"] == 2


def test_models_lists_the_loaded_model(server: LiveServer, client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert len(models) == 1
    assert models[0].id == httpx.get(f"{server.url}/health").json()["model"]
    assert models[0].owned_by == "vlmserve"


def test_streamed_and_plain_answers_agree(client: openai.OpenAI) -> None:
    params = dict(model="qwen3-vl", messages=[image_message()], max_tokens=12, temperature=0)
    plain = client.chat.completions.create(**params)
    stream = client.chat.completions.create(**params, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)

    text = plain.choices[0].message.content
    assert text and plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason in ("stop", "length")
    assert plain.id.startswith("chatcmpl-") and plain.object == "chat.completion"

    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == [plain.choices[0].finish_reason]
    assert finals[0].x_vlmserve["ttft_ms"] > 0
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and not chunks[-1].choices
    assert usage_chunks[0].usage.completion_tokens == plain.usage.completion_tokens


def test_usage_counts_image_tokens(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="m", messages=[image_message()],
                                              max_tokens=8, temperature=0)
    usage = response.usage
    assert usage.prompt_tokens >= 576 + 5  # the image, its two markers, the chat template
    assert usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens >= 0
    ext = response.x_vlmserve
    assert ext["image_tokens"] == 576 and ext["images"] == 1
    assert ext["dropped_turns"] == 0


def test_plain_string_image_url_and_text_only(client: openai.OpenAI) -> None:
    with_string_url = client.chat.completions.create(
        model="m", max_tokens=4,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": IMAGE},
                                               {"type": "text", "text": "hi"}]}])
    assert with_string_url.x_vlmserve["image_tokens"] == 576
    text_only = client.chat.completions.create(
        model="m", max_tokens=4, messages=[{"role": "user", "content": "你好"}])
    assert text_only.x_vlmserve["images"] == 0 and text_only.usage.prompt_tokens < 50


def test_json_object_response_format(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="m", messages=[image_message("Answer in JSON.")], max_tokens=16,
        response_format={"type": "json_object"})
    assert response.choices[0].message.content.lstrip().startswith("{")


# ---------------------------------------------------------------------------- conversations


def test_session_continues_with_only_the_new_turn(client: openai.OpenAI) -> None:
    session = f"test-{uuid.uuid4().hex[:8]}"
    first = client.chat.completions.create(model="m", messages=[image_message()],
                                           max_tokens=8, temperature=0,
                                           extra_body={"session_id": session})
    second = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "图片里有几种颜色？"}], max_tokens=8,
        temperature=0, extra_body={"session_id": session})
    # The second prompt holds the first question, its answer and the new question.
    grown = second.usage.prompt_tokens - first.usage.prompt_tokens
    assert grown >= first.usage.completion_tokens + 5
    # ... and the image turn was reused from the slot's KV cache, not computed again.
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1
    assert second.x_vlmserve["image_tokens"] == 576
    assert second.x_vlmserve["session_id"] == session


def test_template_changes_the_prompt(client: openai.OpenAI) -> None:
    def prompt_tokens(template: str) -> tuple[int, str]:
        response = client.chat.completions.create(
            model="m", messages=[image_message(text=None)], max_tokens=4,
            extra_body={"template": template})
        return response.usage.prompt_tokens, response.x_vlmserve["template"]

    zh, zh_name = prompt_tokens("describe_zh")
    structured, structured_name = prompt_tokens("structured_en")
    assert (zh_name, structured_name) == ("describe_zh", "structured_en")
    assert structured > zh  # four questions are longer than one


def test_sliding_window_drops_old_turns(client: openai.OpenAI) -> None:
    filler = "这是一段很长的旧对话内容。" * 30
    history = []
    for _ in range(4):
        history += [{"role": "user", "content": filler},
                    {"role": "assistant", "content": filler}]
    response = client.chat.completions.create(
        model="m", messages=[*history, image_message()], max_tokens=8)
    assert response.x_vlmserve["dropped_turns"] >= 1
    assert response.usage.prompt_tokens <= 1024 - 8


# ---------------------------------------------------------------------------- errors


def test_bad_image_is_a_400_with_openai_error_json(client: openai.OpenAI) -> None:
    not_png = "data:image/png;base64," + base64.b64encode(b"hello, not an image").decode()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[image_message(url=not_png)])
    error = error_of(info.value)
    assert error["code"] == "invalid_image"
    assert error["type"] == "invalid_request_error"
    assert "not an image" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_oversized_body_is_a_413(server: LiveServer) -> None:
    junk = "A" * (2 * 1024 * 1024)  # the limit is 1 MB x 1.4 + 256 kB
    response = httpx.post(f"{server.url}/v1/chat/completions", timeout=30, json={
        "model": "m", "messages": [image_message(url="data:image/png;base64," + junk)]})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large"
    assert "over the limit" in error["message"]


def test_oversized_image_is_a_413(client: openai.OpenAI) -> None:
    # Under the body limit, over the 1 MB image limit once decoded.
    big = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"0" * 1_200_000).decode()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="m", messages=[image_message(url=big)])
    assert info.value.status_code == 413
    assert error_of(info.value)["code"] == "image_too_large"


def test_remote_image_url_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="m", messages=[image_message(url="https://example.invalid/cat.jpg")])
    assert "remote image URLs are disabled" in error_of(info.value)["message"]


@pytest.mark.parametrize(("params", "param"), [
    ({"temperature": 5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"n": 2}, "n"),
    ({"extra_body": {"template": "no-such-template"}}, None),
    ({"extra_body": {"session_id": "bad id with spaces"}}, None),
])
def test_bad_parameters_are_400(client: openai.OpenAI, params: dict, param: str | None) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[image_message()], **params)
    error = error_of(info.value)
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param


def test_malformed_json_and_unknown_path(server: LiveServer) -> None:
    response = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]
    missing = httpx.get(f"{server.url}/v1/nothing-here")
    assert missing.status_code == 404 and "error" in missing.json()


# ---------------------------------------------------------------------------- ops


def test_metrics_move_after_a_request(server: LiveServer, client: openai.OpenAI) -> None:
    before = server.metrics()
    for name in ("vlmserve_requests_total", "vlmserve_prompt_tokens_total",
                 "vlmserve_completion_tokens_total", "vlmserve_time_to_first_token_seconds",
                 "vlmserve_decode_tokens_per_second", "vlmserve_queue_depth",
                 "vlmserve_busy_slots", "vlmserve_aborted_requests_total",
                 "vlmserve_image_cache_hits_total", "vlmserve_image_cache_misses_total",
                 "vlmserve_image_cache_bytes", "vlmserve_prefix_tokens_reused_total",
                 "vlmserve_batch_tokens_total", "vlmserve_http_responses_total"):
        assert f"# TYPE {name.removesuffix('_total')}" in before, name

    response = client.chat.completions.create(model="m", messages=[image_message()],
                                              max_tokens=6, temperature=0)
    after = server.metrics()
    reason = response.choices[0].finish_reason

    def grew(name: str, by: float = 1, **labels: str) -> bool:
        return metric_value(after, name, **labels) >= metric_value(before, name, **labels) + by

    assert grew("vlmserve_requests_total", source="api", finish_reason=reason)
    assert grew("vlmserve_prompt_tokens_total", response.usage.prompt_tokens, source="api")
    assert grew("vlmserve_completion_tokens_total", response.usage.completion_tokens,
                source="api")
    assert grew("vlmserve_time_to_first_token_seconds_count")
    assert grew("vlmserve_http_responses_total", path="/v1/chat/completions", status="200")
    # The same image was sent before: its prompt prefix is reused from a slot's KV cache
    # (so the image need not even come from the image cache).
    assert grew("vlmserve_prefix_tokens_reused_total", 576)
    assert metric_value(after, "vlmserve_image_cache_misses_total") >= 1
    assert metric_value(after, "vlmserve_model_loaded") == 1
    assert metric_value(after, "vlmserve_busy_slots") == 0


def test_api_key_is_enforced(start_server) -> None:
    server = start_server("--api-key", "s3cret", "--no-ui")
    with pytest.raises(openai.AuthenticationError) as info:
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong",
                      max_retries=0).models.list()
    assert error_of(info.value)["code"] == "invalid_api_key"
    assert httpx.post(f"{server.url}/v1/chat/completions", json={}).status_code == 401
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/health").status_code == 200  # open, for probes

    keyed = openai.OpenAI(base_url=f"{server.url}/v1", api_key="s3cret", max_retries=0)
    assert keyed.models.list().data
    answer = keyed.chat.completions.create(model="m", messages=[image_message()],
                                           max_tokens=4)
    assert answer.usage.completion_tokens >= 1
    assert server.metrics({"Authorization": "Bearer s3cret"})


def test_one_sessions_turns_run_one_at_a_time(client: openai.OpenAI) -> None:
    session = f"test-{uuid.uuid4().hex[:8]}"
    client.chat.completions.create(model="m", messages=[image_message()], max_tokens=4,
                                   extra_body={"session_id": session})

    def ask(question: str) -> int:
        return client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": question}], max_tokens=4,
            extra_body={"session_id": session}).usage.prompt_tokens

    results: list[int] = []
    threads = [threading.Thread(target=lambda q=q: results.append(ask(q)))
               for q in ("第二个问题？", "第三个问题？")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Serialized: the later turn's prompt holds the earlier one's question and answer.
    # (Run together, both would have read the same history: equal prompts.)
    assert abs(results[0] - results[1]) >= 5, results


def test_image_token_cap_trades_detail_for_speed(start_server) -> None:
    server = start_server("--image-max-tokens", "64", "--no-ui")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    answer = client.chat.completions.create(model="m", max_tokens=2,
                                            messages=[image_message()])
    # 768x768 is 576 tokens by default; capped, mtmd scales it down to at most 64
    assert 8 <= answer.x_vlmserve["image_tokens"] <= 64
    assert answer.usage.prompt_tokens < 100


def test_sdk_stream_helper_gets_the_plain_answer(client: openai.OpenAI) -> None:
    # client.chat.completions.stream accumulates chunks by choice index: every chunk's
    # choices must carry "index".
    params = dict(model="qwen3-vl", messages=[image_message()], max_tokens=8, temperature=0)
    plain = client.chat.completions.create(**params).choices[0].message.content
    with client.chat.completions.stream(**params) as stream:
        try:
            final = stream.get_final_completion()
        except openai.LengthFinishReasonError as exc:  # the helper's way to say "length"
            final = exc.completion
    assert final.choices[0].message.content == plain
