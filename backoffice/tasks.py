"""The site's Django tasks (`django.tasks`): each runs as a supervised run.

`sales_report` is the demo: the dashboard's "Enqueue the sales report"
button enqueues it through Django's `enqueue`, and it appears on the dashboard
like any run, with its live log, progress, pause and abort.
"""

import logging
import random
import time

from django.tasks import task

from taskrunner import child

logger = logging.getLogger(__name__)

REGIONS = ("north", "south", "east", "west", "central", "islands")


@task
def sales_report(days: int = 30, seconds_per_day: float = 2.0) -> dict:
    """Sum a month of (generated) sales, one day at a time: about a minute by default."""
    logger.info("report started days=%s", days)
    rng = random.Random(days)  # noqa: S311 - demo figures, the same for the same period
    totals = dict.fromkeys(REGIONS, 0)
    for day in range(1, days + 1):
        time.sleep(seconds_per_day)
        sales = {region: rng.randint(20, 500) for region in REGIONS}
        for region, amount in sales.items():
            totals[region] += amount
        best = max(sales, key=lambda region: sales[region])
        logger.info("day %s summed: %s orders, best region %s", day, sum(sales.values()), best)
        child.progress(day, days, f"day {day} of {days}")
    summary = {
        "days": days,
        "orders": sum(totals.values()),
        "best_region": max(totals, key=lambda region: totals[region]),
        "by_region": totals,
    }
    print(f"report done: {summary['orders']} orders, best region {summary['best_region']}")
    return summary
