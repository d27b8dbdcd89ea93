"""Task collection (xapi.tasks.Tasks.sweep) against xapi's timeout_tasks rules, on a real database."""
import time
from xmlrpc.client import DateTime

from xapi.db.schema import insert, new_database
from xapi.events import Hub
from xapi.tasks import Tasks

NOW = 2_000_000_000.0


class App:
    """The two things Tasks needs from the daemon: its database and this host."""
    def __init__(self):
        self.db = new_database()
        self.hub = Hub(self.db)
        self.host_ref = "OpaqueRef:host"


def stamp(seconds_ago: float) -> DateTime:
    return DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime(NOW - seconds_ago)))


def task(app, status, created_ago, finished_ago=None, progress=0.0):
    return insert(app.db, "task", name_label="t", status=status, progress=progress,
                  created=stamp(created_ago),
                  finished=stamp(finished_ago) if finished_ago is not None else DateTime("19700101T00:00:00Z"))


def test_finished_tasks_go_after_65_minutes_pending_ones_stay():
    app = App()
    tasks = Tasks(app)
    old_ok = task(app, "success", 4000, 3901)
    old_failed = task(app, "failure", 4000, 3950)
    old_cancelled = task(app, "cancelled", 5000, 4000)
    recent = task(app, "success", 3900, 3800)
    pending = task(app, "pending", 80000)
    assert sorted(tasks.sweep(NOW)) == sorted([old_ok, old_failed, old_cancelled])
    assert set(app.db.table("task").refs()) == {recent, pending}


def test_a_pending_task_older_than_a_day_goes_when_its_progress_stalls():
    app = App()
    tasks = Tasks(app)
    hung = task(app, "pending", 90000, progress=0.3)
    moving = task(app, "pending", 90000, progress=0.3)
    assert tasks.sweep(NOW) == []                       # first seen: on probation only
    app.db.table("task").set_field(moving, "progress", 0.5)
    assert tasks.sweep(NOW + 30) == [hung]
    assert tasks.sweep(NOW + 60) == [moving]            # it stalled since the last sweep
    assert app.db.table("task").refs() == []


def test_beyond_max_tasks_the_oldest_finished_go_first():
    app = App()
    tasks = Tasks(app, max_tasks=3)
    a = task(app, "success", 600, 500)
    b = task(app, "failure", 600, 400)
    c = task(app, "success", 600, 300)
    p1 = task(app, "pending", 100)
    p2 = task(app, "pending", 100)
    assert sorted(tasks.sweep(NOW)) == sorted([a, b])   # 5 young, 3 allowed: the two oldest finished
    assert set(app.db.table("task").refs()) == {c, p1, p2}
    task(app, "pending", 50)
    assert tasks.sweep(NOW) == [c]                      # pending tasks are never chosen
    assert len(app.db.table("task").refs()) == 3


def test_collection_raises_del_events():
    app = App()
    tasks = Tasks(app)
    ref = task(app, "success", 9000, 9000)
    table = app.db.table("task")
    gen = app.db.generation
    tasks.sweep(NOW)
    assert ref not in table and app.db.generation > gen
