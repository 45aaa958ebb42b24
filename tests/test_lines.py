"""The line splitter and the child protocol parser, without processes."""

from taskrunner.process.lines import Line, LineSplitter, parse_protocol


def feed_all(splitter: LineSplitter, *chunks: bytes) -> list[Line]:
    lines = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
    return lines + splitter.flush()


def texts(lines: list[Line]) -> list[str]:
    return [line.text for line in lines]


def test_lines_across_chunks_and_last_line_without_newline():
    lines = feed_all(LineSplitter(), b"one\ntw", b"o\nthr", b"ee")
    assert texts(lines) == ["one", "two", "three"]


def test_invalid_utf8_and_nul_are_replaced_and_split_characters_survive():
    lines = feed_all(LineSplitter(), b"bad \xff\n", b"a\x00b\n", b"caf\xc3", b"\xa9\n")
    assert texts(lines) == ["bad \ufffd", "a\ufffdb", "café"]


def test_carriage_return_keeps_the_last_state_and_crlf_is_a_newline():
    lines = feed_all(LineSplitter(), b"10%\r50%\r", b"100%\n", b"dos line\r\n")
    assert texts(lines) == ["100%", "dos line"]


def test_endless_redraw_without_newline_stays_small():
    splitter = LineSplitter(max_line_bytes=1024)
    for i in range(10_000):
        assert splitter.feed(b"\rprogress %d" % i) == []
    assert len(splitter._pending) < 100
    assert texts(splitter.flush()) == ["progress 9999"]


def test_long_line_is_cut_in_marked_pieces_on_character_boundaries():
    splitter = LineSplitter(max_line_bytes=1024)
    data = "é".encode() * 1500 + b"\n"  # 3000 bytes
    lines = feed_all(splitter, data)
    assert [line.continued for line in lines] == [True, True, False]
    assert "".join(texts(lines)) == "é" * 1500
    assert all("\ufffd" not in line.text for line in lines)


def test_huge_line_fed_in_chunks_never_holds_more_than_the_limit():
    splitter = LineSplitter(max_line_bytes=64 * 1024)
    pieces = []
    for _ in range(80):  # 5 MB in 64 KiB writes, no newline
        pieces += splitter.feed(b"x" * 65536)
        assert len(splitter._pending) <= 64 * 1024
    pieces += splitter.feed(b"\n")
    assert sum(len(p.text) for p in pieces) == 80 * 65536
    assert pieces[-1].continued is False
    assert all(p.continued for p in pieces[:-1])


def test_progress_forms():
    assert parse_protocol("::progress 3/4 copying").data == {
        "current": 3,
        "total": 4,
        "fraction": 0.75,
        "message": "copying",
    }
    assert parse_protocol("::progress 0.5").data == {
        "current": 0.5,
        "total": None,
        "fraction": 0.5,
        "message": "",
    }


def test_result_and_message():
    assert parse_protocol('::result {"a": [1, 2]}').data == {"a": [1, 2]}
    event = parse_protocol('::message found {"url": "/x"}')
    assert (event.kind, event.data) == ("message", {"name": "found", "data": {"url": "/x"}})


def test_unrecognised_double_colon_lines_are_ordinary():
    for text in ["::progress lots", "::result {not json", "::other 1", "::message", "plain"]:
        assert parse_protocol(text) is None, text


def test_nul_inside_protocol_json_is_replaced():
    event = parse_protocol('::message m {"a": "x\\u0000y", "k\\u0000": ["\\u0000"]}')
    assert event.data == {"name": "m", "data": {"a": "x\ufffdy", "k\ufffd": ["\ufffd"]}}


def test_non_finite_numbers_make_an_ordinary_line():
    # Neither database stores NaN or Infinity in JSON: such a line must never
    # become an event the worker cannot store (issue 15, item 5).
    huge = "1" * 400
    for text in [
        '::result {"v": NaN}',
        '::result {"v": [1, Infinity]}',
        '::result {"v": -Infinity}',
        "::result 1e999",
        f'::result {{"v": {huge}.5}}',
        '::message found {"n": NaN}',
        f'::message found {{"n": {huge}.0}}',
        f"::progress {huge}/10 step",
        f"::progress 1/{huge}.0",
        f"::progress {huge}.5",
    ]:
        assert parse_protocol(text) is None, text


def test_large_but_finite_numbers_are_kept():
    assert parse_protocol('::result {"v": 1e308}').data == {"v": 1e308}
    assert parse_protocol("::progress 5/10").data["fraction"] == 0.5
