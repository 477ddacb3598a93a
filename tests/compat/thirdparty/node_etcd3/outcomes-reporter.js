'use strict';
// mocha's spec reporter (the log on stdout), and each test's outcome written as JSON to
// $OUTCOMES_FILE at the end: [{title, outcome: passed | failed | pending, error}]. A failing
// hook counts as one failed "test" titled after the hook; the tests it skips are absent.
const fs = require('fs');
const Spec = require('mocha/lib/reporters/spec');

class Outcomes extends Spec {
  constructor(runner, options) {
    super(runner, options);
    const outcomes = [];
    const add = (test, outcome, err) =>
      outcomes.push({ title: test.fullTitle(), outcome, error: err ? String(err.message) : '' });
    runner.on('pass', test => add(test, 'passed'));
    runner.on('pending', test => add(test, 'pending'));
    runner.on('fail', (test, err) => add(test, 'failed', err));
    runner.once('end', () => {
      fs.writeFileSync(process.env.OUTCOMES_FILE, JSON.stringify(outcomes, null, 1));
    });
  }
}

module.exports = Outcomes;
