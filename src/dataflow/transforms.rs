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
        // Every expression sees the row as it came in. When none reads a
        // field an earlier one replaces, each value goes straight into its
        // place (a value computed aside and moved in later stalls on its
        // own stores); what it replaced is kept until the row is done, so
        // a row that fails goes to the dead letters as it came in.
        let in_place = computes_in_place(&map);
        self.unary::<CapacityContainerBuilder<Vec<Record>>, _, _, _>(Pipeline, name, move |_, _| {
            let mut dead = Vec::new();
            let mut values: Vec<Value> = Vec::with_capacity(map.computed.len());
            let mut replaced: Vec<(usize, Value)> = Vec::with_capacity(map.computed.len());
            move |input, output| {
                input.for_each(|cap, data| {
                    data.retain_mut(|r| {
                        let computed = if in_place {
                            compute_in_place(&map, &mut r.row, &mut replaced)
                        } else {
                            compute_aside(&map, &mut r.row, &mut values)
                        };
                        if let Err(err) = computed {
                            dead.push(ctx.dead_row(&node, r, &schema, err.0));
                            return false;
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

/// Whether no expression of the map reads a field an earlier one replaces.
fn computes_in_place(map: &MapPlan) -> bool {
    map.computed.iter().enumerate().all(|(k, (e, _, _))| {
        map.computed[..k].iter().all(|(_, target, _)| match target {
            MapTarget::Replace(i) => !e.reads_field(*i),
            MapTarget::Append => true,
        })
    })
}

/// A value an expression computed, as its field's type (an int computed
/// for a double field is widened).
#[inline(always)]
fn as_field(v: Value, ty: FieldType) -> Value {
    match v {
        Value::Int(i) if ty == FieldType::Double => Value::Double(i as f64),
        v => v,
    }
}

/// A map's values put straight into the row; on an error the row is put
/// back as it came in.
#[inline(always)]
fn compute_in_place(
    map: &MapPlan,
    row: &mut crate::record::Row,
    replaced: &mut Vec<(usize, Value)>,
) -> Result<(), crate::expr::EvalError> {
    replaced.clear();
    let width = row.len();
    for (e, target, ty) in &map.computed {
        match e.eval(row) {
            Ok(v) => match target {
                MapTarget::Replace(i) => {
                    replaced.push((*i, std::mem::replace(&mut row[*i], as_field(v, *ty))))
                }
                MapTarget::Append => row.push(as_field(v, *ty)),
            },
            Err(err) => {
                row.truncate(width);
                for (i, v) in replaced.drain(..).rev() {
                    row[i] = v;
                }
                return Err(err);
            }
        }
    }
    replaced.clear();
    Ok(())
}

/// A map's values computed aside, then put in the row: some expression
/// reads a field an earlier one replaces.
fn compute_aside(
    map: &MapPlan,
    row: &mut crate::record::Row,
    values: &mut Vec<Value>,
) -> Result<(), crate::expr::EvalError> {
    values.clear();
    for (e, _, ty) in &map.computed {
        values.push(as_field(e.eval(row)?, *ty));
    }
    for ((_, target, _), v) in map.computed.iter().zip(values.drain(..)) {
        match target {
            MapTarget::Replace(i) => row[*i] = v,
            MapTarget::Append => row.push(v),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Expr;
    use crate::record::{Field, RowSchema};

    fn schema() -> RowSchema {
        RowSchema {
            name: "T".into(),
            fields: vec![
                Field::new("withdraw", FieldType::Double),
                Field::new("balance", FieldType::Double),
                Field::new("count", FieldType::Int),
            ],
        }
    }

    fn map(fields: &[(&str, MapTarget, FieldType)]) -> MapPlan {
        MapPlan {
            computed: fields
                .iter()
                .map(|(src, t, ty)| (Expr::compile(src, &schema()).unwrap(), t.clone(), *ty))
                .collect(),
            keep: None,
        }
    }

    fn row() -> Vec<Value> {
        vec![Value::Double(5.0), Value::Double(0.0), Value::Int(2)]
    }

    #[test]
    fn values_go_in_place_and_a_failing_row_is_put_back_as_it_came_in() {
        let ok = [
            (
                "balance - withdraw",
                MapTarget::Replace(1),
                FieldType::Double,
            ),
            ("count * 10", MapTarget::Append, FieldType::Int),
            // An int computed for a double field is widened.
            ("count", MapTarget::Append, FieldType::Double),
        ];
        let m = map(&ok);
        assert!(computes_in_place(&m));
        let mut r = row();
        compute_in_place(&m, &mut r, &mut Vec::new()).unwrap();
        let want = [5.0, -5.0].map(Value::Double).into_iter();
        let want: Vec<Value> = want
            .chain([Value::Int(2), Value::Int(20), Value::Double(2.0)])
            .collect();
        assert_eq!(r, want);

        // The last expression fails after the others changed the row.
        let mut failing = ok.to_vec();
        failing.push((
            "withdraw / (count - 2)",
            MapTarget::Append,
            FieldType::Double,
        ));
        let m = map(&failing);
        assert!(computes_in_place(&m));
        let mut r = row();
        let err = compute_in_place(&m, &mut r, &mut Vec::new()).unwrap_err();
        assert_eq!(err.0, "division by zero");
        assert_eq!(r, row(), "the dead letter gets the row as it came in");
    }

    #[test]
    fn expressions_that_read_a_replaced_field_see_the_row_as_it_came_in() {
        // A swap: each side reads the field the other replaces.
        let m = map(&[
            ("balance", MapTarget::Replace(0), FieldType::Double),
            ("withdraw", MapTarget::Replace(1), FieldType::Double),
        ]);
        assert!(!computes_in_place(&m));
        let mut r = row();
        compute_aside(&m, &mut r, &mut Vec::new()).unwrap();
        assert_eq!(
            r,
            vec![Value::Double(0.0), Value::Double(5.0), Value::Int(2)]
        );
    }
}
