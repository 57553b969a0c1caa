import threading

from sktransfer._lru import LRUCache


def test_the_least_recently_used_entry_goes_first():
    cache = LRUCache(3)
    for key in "abc":
        cache.put(key, key.upper())
    assert cache.get("a") == "A"  # a is now the most recently used
    cache.put("d", "D")
    assert cache.get("b") is None
    assert cache.values() == ["C", "A", "D"]
    assert len(cache) == cache.currsize == 3


def test_put_replaces_and_pop_and_clear_remove():
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("a", 2)
    assert len(cache) == 1 and cache.get("a") == 2
    assert cache.pop("a") == 2 and cache.pop("a", "gone") == "gone"
    cache.put("b", 1)
    cache.clear()
    assert len(cache) == 0 and cache.currsize == 0 and cache.get("b", "none") == "none"


def test_a_size_function_bounds_the_weight():
    cache = LRUCache(10, getsizeof=len)
    cache.put("a", "xxxx")
    cache.put("b", "yyyy")
    cache.put("c", "zzzz")  # 12 > 10: a goes
    assert cache.get("a") is None and cache.currsize == 8
    cache.put("big", "w" * 11)  # heavier than the bound: not kept, nor is anything
    assert len(cache) == 0 and cache.currsize == 0
    cache.put("b", "yyyy")
    cache.put("a", "xx")
    cache.maxsize = 3  # a smaller bound evicts at once
    assert cache.values() == ["xx"] and cache.currsize == 2


def test_zero_keeps_nothing():
    cache = LRUCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0


def test_threads_share_one_cache():
    cache = LRUCache(50, getsizeof=lambda value: 2)

    def work(offset):
        for i in range(2000):
            cache.put((offset, i % 40), i)
            cache.get((offset, (i * 7) % 40))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 25 and cache.currsize == 50
