//! Stateless transforms: filter, validate, map, route. A record an
//! expression fails on goes to the dead letters, named by the transform.

use super::{epoch_of, Records, WorkerContext};
use crate::expr::Expr;
use crate::plan::{MapPlan, MapTarget};
use crate::record::{FieldType, Record, RowSchema, Value};
use std::rc::Rc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::Operator;

/// The stateless transforms, as small operators over streams of records.
pub(super) trait Transforms<'s> {
    fn filter_rows(
        self,
        name: &str,
        cond: Expr,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s>;
    fn validate(
        self,
        name: &str,
        rules: Vec<(String, Expr)>,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s>;
    fn map_rows(
        self,
        name: &str,
        map: MapPlan,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s>;
    fn route(
        self,
        name: &str,
        routes: Vec<(String, Expr)>,
        used: Vec<bool>,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Vec<Records<'s>>;
}

impl<'s> Transforms<'s> for Records<'s> {
    fn filter_rows(
        self,
        name: &str,
        cond: Expr,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s> {
        let node = name.to_string();
        self.unary::<CapacityContainerBuilder<Vec<Record>>, _, _, _>(Pipeline, name, move |_, _| {
            let mut dead = Vec::new();
            move |input, output| {
                input.for_each(|cap, data| {
                    let before = data.len();
                    data.retain(|r| match cond.test(&r.row) {
                        Ok(keep) => keep,
                        Err(e) => {
                            dead.push(ctx.dead_row(&node, r, &schema, e.0));
                            false
                        }
                    });
                    let dropped = (before - data.len() - dead.len()) as u64;
                    ctx.count(epoch_of(&cap), |c| c.filtered += dropped);
                    ctx.dead(epoch_of(&cap), std::mem::take(&mut dead));
                    output.session(&cap).give_container(data);
                });
            }
        })
    }

    fn validate(
        self,
        name: &str,
        rules: Vec<(String, Expr)>,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s> {
        let node = name.to_string();
        self.unary::<CapacityContainerBuilder<Vec<Record>>, _, _, _>(Pipeline, name, move |_, _| {
            let mut dead = Vec::new();
            move |input, output| {
                input.for_each(|cap, data| {
                    data.retain(|r| {
                        for (rule, cond) in &rules {
                            let reason = match cond.test(&r.row) {
                                Ok(true) => continue,
                                Ok(false) => format!("rule `{rule}` failed"),
                                Err(e) => format!("rule `{rule}`: {}", e.0),
                            };
                            dead.push(ctx.dead_row(&node, r, &schema, reason));
                            return false;
                        }
                        true
                    });
                    ctx.dead(epoch_of(&cap), std::mem::take(&mut dead));
                    output.session(&cap).give_container(data);
                });
            }
        })
    }

    fn map_rows(
        self,
        name: &str,
        map: MapPlan,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s> {
        let node = name.to_string();
        self.unary::<CapacityContainerBuilder<Vec<Record>>, _, _, _>(Pipeline, name, move |_, _| {
            let mut dead = Vec::new();
            let mut values: Vec<Value> = Vec::with_capacity(map.computed.len());
            move |input, output| {
                input.for_each(|cap, data| {
                    data.retain_mut(|r| {
                        // Every expression sees the row as it came in.
                        values.clear();
                        for (e, _, ty) in &map.computed {
                            match e.eval(&r.row) {
                                Ok(Value::Int(i)) if *ty == FieldType::Double => {
                                    values.push(Value::Double(i as f64))
                                }
                                Ok(v) => values.push(v),
                                Err(err) => {
                                    dead.push(ctx.dead_row(&node, r, &schema, err.0));
                                    return false;
                                }
                            }
                        }
                        for ((_, target, _), v) in map.computed.iter().zip(values.drain(..)) {
                            match target {
                                MapTarget::Replace(i) => r.row[*i] = v,
                                MapTarget::Append => r.row.push(v),
                            }
                        }
                        if let Some(keep) = &map.keep {
                            let row = std::mem::take(&mut r.row);
                            r.row = keep.iter().map(|&i| row[i].clone()).collect();
                        }
                        true
                    });
                    ctx.dead(epoch_of(&cap), std::mem::take(&mut dead));
                    output.session(&cap).give_container(data);
                });
            }
        })
    }

    fn route(
        self,
        name: &str,
        routes: Vec<(String, Expr)>,
        used: Vec<bool>,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Vec<Records<'s>> {
        let mut builder = OperatorBuilder::new(name.to_string(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let mut outputs = Vec::new();
        let mut streams = Vec::new();
        for _ in 0..=routes.len() {
            let (o, s) = builder.new_output::<Vec<Record>>();
            outputs.push(o);
            streams.push(s);
        }
        let node = name.to_string();
        builder.build(move |_| {
            let mut parts: Vec<Vec<Record>> = vec![Vec::new(); routes.len() + 1];
            let mut dead = Vec::new();
            let mut matched: Vec<usize> = Vec::with_capacity(routes.len() + 1);
            move |_frontiers| {
                let mut handles: Vec<_> = outputs.iter_mut().map(|o| o.activate()).collect();
                input.for_each(|cap, data| {
                    let mut filtered = 0u64;
                    'records: for r in data.drain(..) {
                        matched.clear();
                        for (i, (_, cond)) in routes.iter().enumerate() {
                            match cond.test(&r.row) {
                                Ok(true) => matched.push(i),
                                Ok(false) => {}
                                Err(e) => {
                                    dead.push(ctx.dead_row(&node, &r, &schema, e.0));
                                    continue 'records;
                                }
                            }
                        }
                        if matched.is_empty() {
                            matched.push(routes.len());
                        }
                        matched.retain(|&o| used[o]);
                        match matched.len() {
                            0 => filtered += 1,
                            1 => parts[matched[0]].push(r),
                            _ => {
                                for &o in &matched[1..] {
                                    parts[o].push(r.clone());
                                }
                                parts[matched[0]].push(r);
                            }
                        }
                    }
                    ctx.count(epoch_of(&cap), |c| c.filtered += filtered);
                    ctx.dead(epoch_of(&cap), std::mem::take(&mut dead));
                    for (o, part) in parts.iter_mut().enumerate() {
                        if !part.is_empty() {
                            handles[o].give(&cap, part);
                            part.clear();
                        }
                    }
                });
            }
        });
        streams
    }
}
