"""The cluster model's simulation against hand arithmetic: N hosts get min(N x a client's limit, the servers'),
items bound by their own chain do not speed up with more hosts than items, shared cores bind CPU-heavy items."""
import pytest

from harness.sizing.cluster import capacities, item_demands, simulate


def item(chain=0.0, **use):
    return {"item": "x", "order": 1.0, "chain": chain, "cpu": 0.0, "lab_cpu": 0.0, "use": use}


def test_hosts_add_their_links_until_the_servers_bind():
    # 4 items of 10 MB each; a client link carries 5 MB/s, the servers 12 MB/s in all
    items = [item(0.001, link_read=10e6, server_read=10e6) for _ in range(4)]
    cap = lambda n: {("link_read", h): 5e6 for h in range(n)} | {"server_read": 12e6}  # noqa: E731
    one = simulate(items, 1, 4, cap(1))
    assert one["seconds"] == pytest.approx(40e6 / 5e6) and one["busy_fraction"]["link_read"] == pytest.approx(1.0)
    two = simulate(items, 2, 2, cap(2))
    assert two["seconds"] == pytest.approx(40e6 / 10e6)  # 2 x 5 MB/s < 12
    four = simulate(items, 4, 1, cap(4))
    assert four["seconds"] == pytest.approx(40e6 / 12e6)  # 4 x 5 > 12: the servers bind
    assert four["busy_fraction"]["server_read"] == pytest.approx(1.0)


def test_an_items_own_chain_bounds_it_whatever_the_capacity():
    items = [item(3.0, server_read=1.0) for _ in range(2)] + [item(1.0, server_read=1.0)]
    r = simulate(items, 3, 1, {"server_read": 1e12})
    assert r["seconds"] == pytest.approx(3.0)            # the longest chain
    r = simulate(items, 1, 1, {"server_read": 1e12})
    assert r["seconds"] == pytest.approx(7.0)            # one worker: one after the other


def test_items_queue_on_shared_cores_heaviest_first():
    # 3 items of 2 CPU-seconds on 2 cores, 3 workers: all three share the cores (6 / 2 = 3 s)
    items = [item(2.0, cores=2.0) for _ in range(3)]
    assert simulate(items, 3, 1, {"cores": 2.0})["seconds"] == pytest.approx(3.0)
    # 2 workers: two run at full speed (2 s), then the third alone (2 s)
    assert simulate(items, 2, 1, {"cores": 2.0})["seconds"] == pytest.approx(4.0)


def test_max_min_fairness_gives_the_spare_capacity_to_the_items_that_can_use_it():
    # one item is capped by its chain at 1/4 of an item per second; the other takes what the server has left
    items = [item(4.0, server_read=8e6), item(0.0001, server_read=8e6)]
    r = simulate(items, 2, 1, {"server_read": 4e6})
    # together: the capped item uses 2 MB/s, the other 2 MB/s until... worked by hand: both progress; the fast one
    # gets 4 - 2 = 2 MB/s while the slow one runs at its chain's pace (8 MB / 4 s = 2 MB/s): both end at 4 s
    assert r["seconds"] == pytest.approx(4.0)


def test_capacities_from_costs():
    fig = lambda v: {"value": v, "unit": "", "source": ""}  # noqa: E731
    costs = {"read_bandwidth": fig(5e6), "write_bandwidth": fig(3e6), "server_read_bandwidth": fig(12e6),
             "server_write_bandwidth": fig(8e6), "server_small_files": fig(200.0), "server_mixed_capacity": fig(1.3)}
    cap = capacities(costs, 2, None, 2.0)
    assert cap[("link_read", 1)] == 5e6 and cap[("link_write", 0)] == 3e6 and cap["server_read"] == 12e6
    assert cap["cores"] == 2.0 and cap["server_files"] == 1.0 and cap["server_io"] == 1.3


def test_reads_and_writes_that_share_the_servers_links_add_up():
    # 10 MB read (alone 10 MB/s) and 10 MB written (alone 10 MB/s): independent paths take 1 s, shared ones 2 s
    items = [item(0.0001, server_read=10e6, server_write=10e6, server_io=10e6 / 10e6 + 10e6 / 10e6)]
    both = {"server_read": 10e6, "server_write": 10e6}
    assert simulate(items, 1, 1, both | {"server_io": 2.0})["seconds"] == pytest.approx(1.0)
    assert simulate(items, 1, 1, both | {"server_io": 1.0})["seconds"] == pytest.approx(2.0)


def fig(v):
    return {"value": v, "unit": "", "source": ""}


def small_file_stage(files, size, getattrs=0, cpu=0.5):
    """An observed stage of one item that writes ``files`` files of ``size`` bytes whole and stats ``getattrs``."""
    import pandas as pd

    ops = {"create": files, "write": files, "getattr": getattrs}
    prof = {"ops": {k: {"count": v} for k, v in ops.items()}, "bytes_read": 0, "bytes_written": files * size,
            "request_sizes": {"write": {"mean_bytes": size}, "read": {"mean_bytes": 0}}}
    return {"stage": "patches", "source": "test", "io_profile": prof,
            "item_table": pd.DataFrame({"item": ["s0"], "seconds": [1.0], "cpu_seconds": [cpu]})}


def test_a_small_file_costs_the_servers_its_bytes_at_their_bandwidth_and_a_fixed_time_beyond():
    # measured: 200 files/s of 32 KiB while the targets write 8 MB/s: 5 ms a file, of which 4.096 ms its bytes
    target = {"server_small_files": fig(200.0), "server_write_bandwidth": fig(8e6),
              "server_small_file_bytes": fig(32768)}
    for size in (32768, 16384):
        use = item_demands(small_file_stage(100, size), target, False)[0]["use"]
        assert use["server_files"] == pytest.approx(100 * (0.005 - 0.004096))  # per file, whatever its size
        assert use["server_write"] == 100 * size                               # the bytes, at the bandwidth
    # so 100 files of 16 KiB take the servers' links (reads, writes and files one budget, as the mixed phase
    # measured) 100 x (0.904 + 2.048) ms, not the 500 ms of 32 KiB files
    target["server_mixed_capacity"] = fig(1.0)
    half = simulate(item_demands(small_file_stage(100, 16384, cpu=0.0), target, False), 1, 1,
                    capacities(target, 1, None, False))
    assert half["seconds"] == pytest.approx(100 * (0.000904 + 16384 / 8e6), rel=1e-6)


def test_a_small_file_s_time_on_the_servers_is_measured_at_two_sizes():
    """The parallel phase writes small files at 32 and 8 KiB: a fixed time a file and a time a byte, the line through
    the two. Servers that take as many 8 KiB files a second as 32 KiB ones (200) spend a time a file, whatever its
    bytes: 100 files of 16 KiB cost them 100 x 5 ms, of which their bytes at the write bandwidth (8 MB/s) are
    2.048 ms each, so 2.952 ms a file beyond (before: 0.904 ms, the 32 KiB file's time less its own bytes, as if
    the rest were bytes)."""
    from harness.sizing import storage_costs

    def doc(fps_32k, fps_8k):
        return {"profile": "lab", "created_at": "20261204T000000", "jobs": {}, "parallel": {"hosts": 3, "phases": {
            "write": {"write_bw_bytes_per_s": 8e6},
            "small_writes": {"files_per_s": fps_32k, "small_files": 300, "small_bytes": 300 * 32768},
            "small_writes_8k": {"files_per_s": fps_8k, "small_files": 300, "small_bytes": 300 * 8192}}}}

    per_file = storage_costs(doc(200.0, 200.0))
    assert per_file["server_small_file_fixed"]["value"] == pytest.approx(0.005)
    assert per_file["server_small_file_per_byte"]["value"] == pytest.approx(0.0)
    use = item_demands(small_file_stage(100, 16384), per_file, False)[0]["use"]
    assert use["server_files"] == pytest.approx(100 * (0.005 - 16384 / 8e6))
    # servers whose small files are their bytes (8 KiB files 4 times as many a second, less a fixed 0.2 ms): the
    # fixed time a file is all that is left beyond the bytes
    by_bytes = storage_costs(doc(1 / (0.0002 + 32768 / 8e6), 1 / (0.0002 + 8192 / 8e6)))
    use = item_demands(small_file_stage(100, 16384), by_bytes, False)[0]["use"]
    assert use["server_files"] == pytest.approx(100 * 0.0002)


def test_the_lab_s_cpu_is_charged_per_kind_of_operation():
    # creates cost the lab 2 ms of CPU each, stats 0.1 ms; a stage's getattrs are charged at the stat's cost
    target = {"lab_cpu_per_create": fig(0.002), "lab_cpu_per_stat": fig(0.0001)}
    d = item_demands(small_file_stage(100, 16384, getattrs=1000), target, True)[0]
    assert d["lab_cpu"] == pytest.approx(100 * 0.002 + 1000 * 0.0001)
    assert d["use"]["cores"] == pytest.approx(0.5 + 0.2 + 0.1)


def test_the_lab_s_cpu_per_operation_is_what_a_phase_costs_beyond_an_idle_one():
    """Each parallel phase starts a mount on every host and waits for a common start: the idle phase's CPU (that
    and nothing else) comes off every phase's before it is divided by its operations or bytes."""
    from harness.sizing import storage_costs

    def phase(cpu, **figures):
        return {"lab_cpu_seconds": {"master": cpu / 2, "client": cpu / 2}, **figures}
    doc = {"profile": "lab", "jobs": {}, "parallel": {"hosts": 3, "phases": {
        "idle": phase(0.6), "create": phase(0.9, create_per_s=3000.0, metadata_operations=900),
        "stat": phase(0.6, stat_per_s=9000.0, metadata_operations=900),
        "write": phase(2.6, write_bw_bytes_per_s=1e8, write_bytes=10**9)}}}
    costs = storage_costs(doc, name="lab")
    assert costs["lab_cpu_per_create"]["value"] == pytest.approx(0.3 / 900)
    assert costs["lab_cpu_per_stat"]["value"] == 0.0  # nothing beyond the idle phase
    assert costs["lab_cpu_per_byte_written"]["value"] == pytest.approx(2.0 / 10**9)
    assert "less an idle phase's (0.60 CPU s)" in costs["lab_cpu_per_create"]["source"]


def test_workers_queue_at_the_servers_between_their_own_work():
    """Mean value analysis by hand: 4 items, each 1 s of its own chain of which 0.5 s at the servers (one queue).
    One worker: 4 s, as the fluid. Two: the fluid keeps the servers exactly full (2 items a second x 0.5 s = 1)
    and ends in 2 s; but a request that finds the other's waits: with one customer the queue holds 0.5, so the
    second's response is 0.5 x 1.5 = 0.75 s, 2 items in 0.5 + 0.75 s: 1.6 a second, 2.5 s."""
    from harness.sizing.cluster import queueing

    items = [item(1.0, server_io=0.5) for _ in range(4)]
    assert queueing(items, 1, {"server_io": 1.0}, "server_io")["stretch"] == pytest.approx(1.0)
    two = queueing(items, 2, {"server_io": 1.0}, "server_io")
    assert two["items_per_s"] == pytest.approx(1.6) and two["station"] == "server_io"
    assert two["think_seconds"] == pytest.approx(0.5) and two["utilisation"] == pytest.approx(0.8)
    assert simulate(items, 2, 1, {"server_io": 1.0})["seconds"] == pytest.approx(2.0)  # what the fluid alone says
    assert two["stretch"] == pytest.approx(2.0 / 1.6)  # the fluid's 2 items a second over the queue's 1.6: 2.5 s
    # the queue is the resource the fluid finds full: there, not in the fluid's time alone (2 s), the stage ends
    from harness.sizing.cluster import predict

    demand = {"stage": "patches", "source": "test", "item_table": __import__("pandas").DataFrame(
        {"item": list("abcd"), "seconds": [1.0] * 4, "cpu_seconds": [0.5] * 4, "bytes_read": [5.5e6] * 4}),
        "io_profile": {"ops": {"read": {"count": 4}}, "bytes_read": 2.2e7, "bytes_written": 0, "request_sizes": {}}}
    target = {"server_read_bandwidth": fig(1e7)}  # 0.55 s of the servers an item, of its 1 s measured there
    p = predict(demand, target, 2, 1, lab=False, cores_per_host=4.0, on_target=True)
    assert p["binding"] == "server_read" and p["fluid_seconds"] == pytest.approx(4 * 0.55)
    # one worker: 0.55 s in the queue; two: 0.55 x 1.55, with 0.45 s of thinking: 2 / (0.45 + 0.8525) a second,
    # against the fluid's 1 / 0.55
    assert p["seconds"] == pytest.approx(4 * 0.55 * (1 / 0.55) / (2 / (0.45 + 0.55 * 1.55)))


def test_a_request_alone_at_the_servers_goes_no_faster_than_its_clients_link():
    """8 items measured on the target, 1 s each, 4.4 MB read; two client hosts of one worker, each host's link
    5 MB/s, the servers 8 MB/s between them. By hand: alone an item reads at its link (0.88 s) and thinks 0.12 s;
    two at once share the servers (4 MB/s each, 1.1 s), so the pair cycles in 1.22 s: 4 x 1.1 + 3 x 0.12 = 4.76 s.
    The fluid (4.4 s) leaves out the thinking; a queue served at the servers' whole 8 MB/s one request at a time
    (a lone read at 8 MB/s: 0.55 s, thinking 0.45) made the second host wait for the first: 5.21 s (CI's
    40 Mbit/s client links: 1.21 of what two hosts measured, where the fluid had been exact)."""
    import pandas as pd

    from harness.sizing.cluster import predict

    demand = {"stage": "patches", "source": "test", "item_table": pd.DataFrame(
        {"item": list("abcdefgh"), "seconds": [1.0] * 8, "cpu_seconds": [0.1] * 8, "bytes_read": [4.4e6] * 8}),
        "io_profile": {"ops": {"read": {"count": 8}}, "bytes_read": 8 * 4.4e6, "bytes_written": 0,
                       "request_sizes": {}}}
    target = {"read_bandwidth": fig(5e6), "server_read_bandwidth": fig(8e6)}
    p = predict(demand, target, 2, 1, lab=False, cores_per_host=4.0, on_target=True)
    assert p["fluid_seconds"] == pytest.approx(4.4) and p["binding"] == "server_read"
    assert p["seconds"] == pytest.approx(4.76, rel=0.01)


def test_a_stage_predicted_from_a_run_on_the_target_takes_its_measured_items_wire_bytes_and_machine_cpu():
    """A one-host run on the storage itself: each item's chain is its measured time, what it costs the servers the
    bytes the lab's clients received and sent for it (the client's read-ahead included), its load on the cores its
    share of the machine's busy CPU; a run elsewhere keeps the operations' costs."""
    import pandas as pd

    from harness.sizing.cluster import predict
    from harness.sizing.demand import with_machine_columns

    prof = {"ops": {"open": {"count": 2}, "read": {"count": 20}}, "bytes_read": 20e6, "bytes_written": 0,
            "request_sizes": {"read": {"mean_bytes": 1e6}, "write": {"mean_bytes": 0}}}
    table = pd.DataFrame({"item": ["a", "b"], "seconds": [3.0, 1.0], "cpu_seconds": [0.5, 0.5],
                          "bytes_read": [15e6, 5e6], "bytes_written": [0, 0]})
    rec = {"machine_cpu_seconds": 8.0, "lab": {"link_bytes": {"client": {"received_bytes": 40e6, "sent_bytes": 1e3}}}}
    demand = {"stage": "patches", "source": "test", "io_profile": prof, "item_table": with_machine_columns(table, rec)}
    target = {"server_read_bandwidth": fig(10e6)}
    a, b = item_demands(demand, target, 2.0, on_target=True)
    assert (a["chain"], b["chain"]) == (3.0, 1.0)
    assert a["use"]["server_read"] == pytest.approx(30e6) and b["use"]["server_read"] == pytest.approx(10e6)
    assert a["use"]["cores"] == pytest.approx(6.0) and b["use"]["cores"] == pytest.approx(2.0)
    elsewhere = item_demands(demand, target, 2.0)[0]
    assert elsewhere["use"]["server_read"] == pytest.approx(15e6) and elsewhere["use"]["cores"] == pytest.approx(0.5)
    # on 2 hosts (8 cores free, so only the servers bind): both items rise together until the servers are full,
    # 30r + 10r MB/s = 10 MB/s, r = 1/4 of an item a second (under both chains' 1/3 and 1): 4 s, the 40 MB the
    # links carried at 10 MB/s; from the counted bytes, 15r + 5r = 10, r = 1/2 (their chains, CPU alone: 2): 2 s.
    # No queue stretches either: the workers never think between requests (chain <= time at the servers)
    on = predict(demand, target, 2, 1, lab=8.0, on_target=True)
    assert on["seconds"] == pytest.approx(4.0) and on["binding"] == "server_read"
    assert predict(demand, target, 2, 1, lab=8.0)["seconds"] == pytest.approx(2.0)
    # a host's link carried 40 MB over the items' 4 s there: at least 10 MB/s, whatever a short fio job says (1 MB/s
    # would make item a's 30 MB take 30 s); at 10 MB/s the servers bind as before
    slow_link = dict(target, read_bandwidth=fig(1e6))
    assert predict(demand, slow_link, 2, 1, lab=8.0, on_target=True)["seconds"] == pytest.approx(4.0)


def test_wsibench_size_gives_a_storage_the_items_a_run_on_it_measured(tmp_path):
    """`wsibench size RUN_ON_LOCAL_OBSERVED RUN_ON_THE_LAB`: the lab's answer takes the observed run's operations and
    the lab run's items (their seconds, machine CPU and link bytes); local keeps its own; a run of another workload
    (other items) is not taken for this one's."""
    import pandas as pd

    from harness.sizing.answer import runs_on_targets
    from harness.sizing.demand import pipeline_figures

    def run(rid, storage, workload="w", observed=False, seconds=(1.0, 1.0)):
        d = tmp_path / rid
        d.mkdir()
        pd.DataFrame({"item": ["a", "b"], "seconds": list(seconds), "cpu_seconds": [0.4, 0.4],
                      "bytes_read": [5e6, 5e6], "bytes_written": [1e6, 1e6]}).to_parquet(d / "patches.parquet")
        stage = {"items": 2, "work_seconds": sum(seconds), "patches": 100, "cpu_seconds": 0.8,
                 "bytes_read": 10**7, "bytes_written": 2 * 10**6, "files_written": 100,
                 "machine_cpu_seconds": 3.0}
        if observed:
            stage["io_profile"] = {"ops": {"create": {"count": 100}, "write": {"count": 100}}, "bytes_read": 10**7,
                                   "bytes_written": 2 * 10**6, "request_sizes": {}}
        else:
            stage["lab"] = {"link_bytes": {"client": {"received_bytes": 2 * 10**7, "sent_bytes": 2 * 10**6}}}
        return {"run_id": rid, "workload": workload, "storage": {"profile": storage}, "engine": {"nodes": 1},
                "stages": {"patches": stage}, "_dir": str(d)}

    local = run("r1", "local", observed=True)
    local["storage"]["observe"] = {"mountpoint": "/x"}
    on_lab = run("r2", "lab-x", seconds=(4.0, 2.0))
    other = run("r3", "lab-y", workload="other")
    stages = {"patches": pipeline_figures(local, "patches")}
    on = runs_on_targets([local, on_lab, other], stages, {"local": {}, "lab-x": {}, "lab-y": {}})
    assert set(on) == {"lab-x"}  # local's run went through the counting passthrough; lab-y's is another workload
    f = on["lab-x"]["patches"]
    assert f["demand"]["io_profile"] is local["stages"]["patches"]["io_profile"] and f["on_target"] == "run r2"
    items = f["demand"]["item_table"]
    assert list(items["seconds"]) == [4.0, 2.0] and list(items["machine_cpu_seconds"]) == [2.0, 1.0]
    assert list(items["wire_read_bytes"]) == [10**7, 10**7]


def test_a_client_link_carries_at_least_what_one_stream_drove_it_at():
    """fio's parallel streams through a 40 Mbit/s tbf link stalled in TCP's retransmission back-off (1.0-3.7 MB/s
    from run to run, one request 9.7 s) where one stream read 4.2 MB/s: the link's capacity in the cluster model is
    the faster of the two (before: the parallel figure alone, and the small cluster proof failed in the full suite,
    the link binding a stage at 16.2 s that took 12.2)."""
    stalled = {"read_bandwidth": fig(1.4e6), "read_one_stream": fig(4.2e6), "write_bandwidth": fig(4.8e6)}
    cap = capacities(stalled, 2, None, False)
    assert cap[("link_read", 0)] == cap[("link_read", 1)] == 4.2e6 and cap[("link_write", 0)] == 4.8e6
    assert capacities(dict(stalled, read_bandwidth=fig(9e6)), 1, None, False)[("link_read", 0)] == 9e6
    assert capacities({"read_one_stream": fig(4.2e6)}, 1, None, False)[("link_read", 0)] == 4.2e6


def test_servers_measured_through_links_that_bound_them_are_no_limit_for_as_many_hosts():
    """`wsibench fio --hosts 2` on 40 Mbit/s client links: each host read at its own link's rate, so the 8.1 MB/s the
    servers gave two hosts is the links' sum, not the servers' limit. For up to 2 hosts it is no shared limit (before:
    a shared queue the on-target prediction stretched to 1.20 of the measured time); for more, it stays, a floor."""
    target = {"read_bandwidth": fig(4.2e6), "server_read_bandwidth": fig(8.1e6), "server_read_client_bound": fig(2)}
    assert "server_read" not in capacities(target, 2, None, False)
    assert capacities(target, 3, None, False)["server_read"] == 8.1e6
    assert capacities(dict(target, server_read_client_bound=None), 2, None, False)["server_read"] == 8.1e6


def test_fio_costs_name_one_stream_and_servers_measured_through_their_clients_links():
    """From a characterisation by hand: one stream's read rate is the link's floor; a parallel phase whose every host
    read at one host's own rate (3.9 and 4.1 MB/s against 4.2 alone: >= 90%) measured the links, not the servers;
    one host at 3.0 MB/s (71%) leaves the servers' figure a limit. Writes likewise against checkpoint_write."""
    from harness.sizing import storage_costs
    from harness.sizing.costs import server_bandwidth

    def doc(read_per_host, write_per_host):
        return {"profile": "lab", "created_at": "20261204T000000",
                "jobs": {"slide_seq_read": {"read_bw_bytes_per_s": 4.2e6},
                         "tfrecord_stream": {"read_bw_bytes_per_s": 1.4e6},
                         "checkpoint_write": {"write_bw_bytes_per_s": 4.8e6}},
                "parallel": {"hosts": 2, "phases": {
                    "read": {"read_bw_bytes_per_s": sum(read_per_host),
                             "per_host": [{"read_bw_bytes_per_s": v} for v in read_per_host]},
                    "write": {"write_bw_bytes_per_s": sum(write_per_host),
                              "per_host": [{"write_bw_bytes_per_s": v} for v in write_per_host]}}}}

    c = storage_costs(doc([3.9e6, 4.1e6], [2.0e6, 2.2e6]))
    assert c["read_one_stream"]["value"] == 4.2e6 and c["read_bandwidth"]["value"] == 1.4e6
    assert c["server_read_client_bound"]["value"] == 2 and "server_write_client_bound" not in c  # 2.0 < 0.9 x 4.8
    assert server_bandwidth(c, "read", 2) is None and server_bandwidth(c, "read", 3) == 8.0e6
    assert server_bandwidth(c, "write", 2) == pytest.approx(4.2e6)
    assert "server_read_client_bound" not in storage_costs(doc([3.0e6, 4.1e6], [2.0e6, 2.2e6]))


def test_each_further_host_adds_its_load_on_the_lab_s_cores_to_every_item():
    """The lab's two cores are queues apart (the kernel wakes a thread on the core it last ran on), not one pool.
    12 items measured on the lab, one host of one worker: 1 s each, 1.2 CPU-seconds of the machine each (that host
    kept the cores 0.6 busy). On 3 hosts, by hand: every item takes its 1 s plus the two other workers' load spread
    over the cores, 2 x 1.2 / 2 = 1.2 s: 2.2 s, three at a time, 4 rounds: 8.8 s, the machine 3 / 2.2 x 1.2 = 1.64
    cores busy. The fluid (the cores full: 12 x 1.2 / 2 = 7.2 s) and a pooled queue of the two cores (7.4 s) both
    keep the cores fuller than the machine was (the unshaped stages on 2 and 3 hosts had read 0.75-0.92 of their
    measured times, the model's cores 1.95 of 2 busy where the machine's were 1.67-1.72)."""
    import pandas as pd

    from harness.sizing.cluster import predict
    from harness.sizing.demand import with_machine_columns

    prof = {"ops": {"read": {"count": 12}}, "bytes_read": 12e3, "bytes_written": 0, "request_sizes": {}}
    table = pd.DataFrame({"item": [f"s{i}" for i in range(12)], "seconds": [1.0] * 12, "cpu_seconds": [0.4] * 12,
                          "bytes_read": [1e3] * 12})
    demand = {"stage": "patches", "source": "test", "io_profile": prof,
              "item_table": with_machine_columns(table, {"machine_cpu_seconds": 14.4})}
    assert predict(demand, {}, 1, 1, lab=2.0, on_target=True)["seconds"] == pytest.approx(12.0)  # as measured
    three = predict(demand, {}, 3, 1, lab=2.0, on_target=True)
    assert three["fluid_seconds"] == pytest.approx(7.2) and three["binding"] == "cores"
    assert three["seconds"] == pytest.approx(8.8)
    assert three["queueing"]["utilisation"] * 2.0 == pytest.approx(3 / 2.2 * 1.2)  # the machine's busy cores
    # two hosts: 1 + 1.2 / 2 = 1.6 s an item, 6 rounds
    assert predict(demand, {}, 2, 1, lab=2.0, on_target=True)["seconds"] == pytest.approx(9.6)
    # a real cluster's hosts each have their own cores, which only their own workers share: the fluid's (3 hosts of
    # 1.2 cores: each item at 1.2 / 1.2 = 1 s, its chain; `wsibench size` had failed here with a KeyError)
    real = predict(demand, {}, 3, 1, lab=False, cores_per_host=1.0, on_target=True)
    assert real["binding"] == "cores" and real["seconds"] == pytest.approx(real["fluid_seconds"]) \
        == pytest.approx(4 * 1.2)
